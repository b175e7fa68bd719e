"""Reviewers' decisions are evidence: the database refuses UPDATE and DELETE."""

from django.db import migrations

from controlplane import append_only


def install(apps, schema_editor):
    append_only.install(schema_editor.connection, "approvals_approvaldecision")


def remove(apps, schema_editor):
    append_only.remove(schema_editor.connection, "approvals_approvaldecision")


class Migration(migrations.Migration):
    dependencies = [("approvals", "0001_decisions_and_clearance")]

    operations = [migrations.RunPython(install, remove)]
