from django.apps import AppConfig


class PolicyConfig(AppConfig):
    """Rego engines, decision points, the decision log and impact analysis."""

    name = "policy"
