from django.apps import AppConfig


class RegistryConfig(AppConfig):
    """Agents (identity, ownership, lifecycle), versioned artifacts, releases and channels."""

    name = "registry"
    append_only_tables = ("registry_artifact", "registry_release", "registry_releaseartifact")
