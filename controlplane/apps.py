from django.apps import AppConfig


class ControlPlaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Control plane kernel"
    append_only_tables = ("controlplane_auditevent",)
