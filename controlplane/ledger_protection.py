"""Database triggers that make the audit ledger append-only.

The application never updates or deletes an event; the triggers make the database refuse
it too, so a bug or a stray ORM call cannot rewrite history. Someone who can drop the
triggers can still edit rows: the hash chain is what detects that.
"""

from django.db.backends.base.base import BaseDatabaseWrapper

TABLE = "controlplane_auditevent"

_POSTGRESQL_INSTALL = [
    """
    CREATE OR REPLACE FUNCTION baton_refuse_ledger_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit ledger is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    f"""
    CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION baton_refuse_ledger_change()
    """,
    f"""
    CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION baton_refuse_ledger_change()
    """,
]
_POSTGRESQL_REMOVE = [
    f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}",
]
_SQLITE_INSTALL = [
    f"""
    CREATE TRIGGER IF NOT EXISTS {TABLE}_no_{operation.lower()} BEFORE {operation} ON {TABLE}
    BEGIN SELECT RAISE(ABORT, 'the audit ledger is append-only: {operation} refused'); END
    """
    for operation in ("UPDATE", "DELETE")
]
_SQLITE_REMOVE = [f"DROP TRIGGER IF EXISTS {TABLE}_no_{operation}" for operation in ("update", "delete")]


def install(connection: BaseDatabaseWrapper) -> None:
    _execute(connection, _POSTGRESQL_INSTALL if connection.vendor == "postgresql" else _SQLITE_INSTALL)


def remove(connection: BaseDatabaseWrapper) -> None:
    _execute(connection, _POSTGRESQL_REMOVE if connection.vendor == "postgresql" else _SQLITE_REMOVE)


def _execute(connection: BaseDatabaseWrapper, statements: list[str]) -> None:
    if connection.vendor not in {"postgresql", "sqlite"}:
        raise NotImplementedError(f"no ledger protection for {connection.vendor}")
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
