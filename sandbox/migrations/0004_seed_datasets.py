"""Seed the datasets and batches the data pipeline review workflow reads."""

from django.db import migrations

from sandbox.seed import seed


def seed_datasets(apps, schema_editor):
    seed(apps)


class Migration(migrations.Migration):
    dependencies = [("sandbox", "0003_data_warehouse_and_catalog")]

    operations = [migrations.RunPython(seed_datasets, migrations.RunPython.noop)]
