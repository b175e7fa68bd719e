"""Database triggers that make tables append-only: rows can be inserted, never changed.

The audit ledger, published artifacts and releases are history; the application never
updates or deletes them, and these triggers make the database refuse it too, so a bug or
a stray ORM call cannot rewrite history. Someone who can drop the triggers can still edit
rows: the ledger's hash chain and the artifacts' content digests are what detect that.

An app lists its append-only tables in `AppConfig.append_only_tables`; its migration
installs the triggers, and the development `flush` lifts them while it empties the
database.
"""

from django.apps import apps
from django.db.backends.base.base import BaseDatabaseWrapper

_POSTGRESQL_FUNCTION = """
    CREATE OR REPLACE FUNCTION baton_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
"""


def install(connection: BaseDatabaseWrapper, table: str) -> None:
    if connection.vendor == "postgresql":
        statements = [
            _POSTGRESQL_FUNCTION,
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION baton_refuse_change()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION baton_refuse_change()",
        ]
    else:
        statements = [
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
            for operation in ("UPDATE", "DELETE")
        ]
    _execute(connection, statements)


def remove(connection: BaseDatabaseWrapper, table: str) -> None:
    if connection.vendor == "postgresql":
        statements = [
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        ]
    else:
        statements = [f"DROP TRIGGER IF EXISTS {table}_no_{operation}" for operation in ("update", "delete")]
    _execute(connection, statements)


def protected_tables() -> list[str]:
    return [table for config in apps.get_app_configs() for table in getattr(config, "append_only_tables", ())]


def _execute(connection: BaseDatabaseWrapper, statements: list[str]) -> None:
    if connection.vendor not in {"postgresql", "sqlite"}:
        raise NotImplementedError(f"no append-only triggers for {connection.vendor}")
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
