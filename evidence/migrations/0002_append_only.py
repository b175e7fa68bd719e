"""Checkpoints are evidence: the database refuses UPDATE and DELETE."""

from django.db import migrations

from controlplane import append_only


def install(apps, schema_editor):
    append_only.install(schema_editor.connection, "evidence_auditcheckpoint")


def remove(apps, schema_editor):
    append_only.remove(schema_editor.connection, "evidence_auditcheckpoint")


class Migration(migrations.Migration):
    dependencies = [("evidence", "0001_checkpoints_and_exports")]

    operations = [migrations.RunPython(install, remove)]
