from django.apps import AppConfig


class PolicyConfig(AppConfig):
    """Rego engines, decision points, the decision log and impact analysis."""

    name = "policy"
    append_only_tables = ("policy_policydecision",)

    def ready(self) -> None:
        from . import registry_checks

        registry_checks.register()
