"""The decision log is evidence: the database refuses UPDATE and DELETE."""

from django.db import migrations

from controlplane import append_only


def install(apps, schema_editor):
    append_only.install(schema_editor.connection, "policy_policydecision")


def remove(apps, schema_editor):
    append_only.remove(schema_editor.connection, "policy_policydecision")


class Migration(migrations.Migration):
    dependencies = [("policy", "0001_decision_log")]

    operations = [migrations.RunPython(install, remove)]
