from django.db import migrations


def create_agent_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.get_or_create(name="agent")


class Migration(migrations.Migration):
    dependencies = [("controlplane", "0002_ledger_protection_and_roles")]

    operations = [migrations.RunPython(create_agent_group, migrations.RunPython.noop)]
