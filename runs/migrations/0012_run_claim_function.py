from django.db import migrations

from runs.engine import commit_sql

# Before this migration the step commit took the audit entries as one text array per field.
ARRAYS_SIGNATURE = (
    "uuid, text, timestamptz, double precision, jsonb, jsonb, bigint, jsonb, text, text, jsonb, boolean, "
    "text[], text[], text[], text[], text[], text[], text[], text[], text[]"
)


def install_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(f"DROP FUNCTION IF EXISTS baton_step_commit({ARRAYS_SIGNATURE})")
            commit_sql.install_step_commit_function(cursor, apps)
            commit_sql.install_run_claim_function(cursor, apps)


def drop_run_claim_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            commit_sql.drop_run_claim_function(cursor)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0011_step_commit_function"),
        ("controlplane", "0005_audit_append_takes_json"),
    ]

    operations = [
        migrations.RunPython(install_functions, drop_run_claim_function, elidable=False),
    ]
