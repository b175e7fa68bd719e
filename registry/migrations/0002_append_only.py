"""Published artifacts and releases are history: the database refuses UPDATE and DELETE."""

from django.db import migrations

from controlplane import append_only

TABLES = ("registry_artifact", "registry_release", "registry_releaseartifact")


def install(apps, schema_editor):
    for table in TABLES:
        append_only.install(schema_editor.connection, table)


def remove(apps, schema_editor):
    for table in TABLES:
        append_only.remove(schema_editor.connection, table)


class Migration(migrations.Migration):
    dependencies = [("registry", "0001_initial")]

    operations = [migrations.RunPython(install, remove)]
