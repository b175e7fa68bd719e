from django.db import migrations

from runs.engine import commit_sql


def install_step_commit_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            commit_sql.install_step_commit_function(cursor, apps)


def drop_step_commit_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            commit_sql.drop_step_commit_function(cursor)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0010_run_trace_parent"),
        ("policy", "0002_append_only"),
        ("controlplane", "0004_audit_append_function"),
    ]

    operations = [
        migrations.RunPython(install_step_commit_function, drop_step_commit_function, elidable=False),
    ]
