from django.apps import AppConfig


class RunsConfig(AppConfig):
    """Tasks and runs: the run engine executed by Celery workers."""

    name = "runs"
