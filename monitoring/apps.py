from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Workflow metrics per release, the dashboard, Prometheus metrics and automatic rollback."""

    name = "monitoring"
