"""The Celery application of the data plane (the standard Django recipe)."""

import os

from celery import Celery, states
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_process_shutdown

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


# Celery's Django fixup closes the database connection around every task (unless
# CELERY_DB_REUSE_MAX says otherwise, as the settings do): a new connection and a cold server
# session cost a resumed run about ten milliseconds. Tasks get a request's rule instead: the
# connection is kept within CONN_MAX_AGE and checked before use (CONN_HEALTH_CHECKS), and
# dropped after a task that did not succeed, which may have been stopped in mid-query.


@task_prerun.connect
def _reuse_sound_connections(sender=None, **_kwargs) -> None:
    if not _is_eager(sender):
        from django.db import close_old_connections

        close_old_connections()


@task_postrun.connect
def _drop_connections_after_failure(sender=None, state=None, **_kwargs) -> None:
    if state != states.SUCCESS and not _is_eager(sender):
        from django.db import connections

        connections.close_all()


def _is_eager(task) -> bool:
    """Eager tasks run inside their caller's request or test transaction, connection and all."""
    return task is None or bool(getattr(task.request, "is_eager", False))
