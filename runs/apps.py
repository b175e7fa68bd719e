from django.apps import AppConfig


class RunsConfig(AppConfig):
    """Tasks and runs: the run engine executed by Celery workers."""

    name = "runs"

    def ready(self) -> None:
        from . import telemetry_receivers  # noqa: F401 (connects the receivers)
