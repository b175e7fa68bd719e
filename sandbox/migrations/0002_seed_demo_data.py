"""Seed the knowledge articles and demo cases the demo workflows use."""

from django.db import migrations

from sandbox.seed import seed


def seed_demo_data(apps, schema_editor):
    seed(apps)


class Migration(migrations.Migration):
    dependencies = [("sandbox", "0001_initial")]

    operations = [migrations.RunPython(seed_demo_data, migrations.RunPython.noop)]
