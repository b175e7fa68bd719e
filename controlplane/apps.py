from django.apps import AppConfig
from django.apps import apps as global_apps


class ControlPlaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Control plane kernel"
    append_only_tables = ("controlplane_auditevent",)

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        # Role groups exist whatever happened to the data: after migrate, and after a flush.
        post_migrate.connect(_create_role_groups, sender=self, dispatch_uid="controlplane-role-groups")


def _create_role_groups(sender, apps=None, **kwargs) -> None:
    from .identity import AGENT, ROLES

    group = (apps or global_apps).get_model("auth", "Group")
    for name in (*ROLES, AGENT):
        group.objects.get_or_create(name=name)
