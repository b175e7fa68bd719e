from django.apps import AppConfig


class RegistryConfig(AppConfig):
    """Agents (identity, ownership, lifecycle), versioned artifacts, releases and channels."""

    name = "registry"
