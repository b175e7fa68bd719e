"""Make the ledger append-only in the database, and create the role groups."""

from django.db import migrations

from controlplane import append_only

ROLES = ("reviewer", "platform", "auditor", "admin")


def install_protection(apps, schema_editor):
    append_only.install(schema_editor.connection, "controlplane_auditevent")


def remove_protection(apps, schema_editor):
    append_only.remove(schema_editor.connection, "controlplane_auditevent")


def create_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLES:
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [
        ("controlplane", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(install_protection, remove_protection),
        migrations.RunPython(create_roles, migrations.RunPython.noop),
    ]
