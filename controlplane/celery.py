"""The Celery application of the data plane (the standard Django recipe)."""

import os

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("baton")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _start_worker_telemetry(**_kwargs) -> None:
    # In each child: the span exporter's thread would not survive the fork from the parent.
    from controlplane.telemetry import configure_tracing

    configure_tracing()


@worker_process_shutdown.connect
def _flush_worker_telemetry(**_kwargs) -> None:
    from controlplane.telemetry import flush_tracing

    flush_tracing()
