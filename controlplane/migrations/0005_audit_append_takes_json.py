from django.db import migrations

from controlplane import ledger_sql

# Before this migration the function took one text array per entry field.
ARRAYS_SIGNATURE = "boolean, text[], text[], text[], text[], text[], text[], text[], text[], text[]"


def install_append_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(f"DROP FUNCTION IF EXISTS baton_audit_append({ARRAYS_SIGNATURE})")
            ledger_sql.install_append_function(cursor)


class Migration(migrations.Migration):
    dependencies = [("controlplane", "0004_audit_append_function")]

    operations = [
        migrations.RunPython(install_append_function, migrations.RunPython.noop, elidable=False),
    ]
