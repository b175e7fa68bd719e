from django.db import migrations, models

from controlplane import append_only, ledger_sql

LEDGER = "controlplane_auditevent"


def protect_again_on_sqlite(apps, schema_editor):
    """SQLite alters a field by rebuilding the table, and the table's triggers go with it."""
    if schema_editor.connection.vendor == "sqlite":
        append_only.install(schema_editor.connection, LEDGER)


def install_append_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            ledger_sql.install_append_function(cursor)


def drop_append_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            ledger_sql.drop_append_function(cursor)


class Migration(migrations.Migration):
    dependencies = [("controlplane", "0003_agent_group")]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, protect_again_on_sqlite, elidable=False),
        migrations.AlterField(model_name="auditevent", name="hash", field=models.CharField(max_length=64)),
        migrations.RunPython(protect_again_on_sqlite, migrations.RunPython.noop, elidable=False),
        migrations.RunPython(install_append_function, drop_append_function, elidable=False),
    ]
