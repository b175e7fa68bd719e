from django.db import migrations

from runs.engine import commit_sql


def install_claim_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            commit_sql.install_run_claim_function(cursor, apps)


class Migration(migrations.Migration):
    """The claim answers a running run's checkpoints too: the resumed worker's one read."""

    dependencies = [
        ("runs", "0013_step_writes_fewer_indexes"),
    ]

    operations = [
        migrations.RunPython(install_claim_function, migrations.RunPython.noop, elidable=False),
    ]
