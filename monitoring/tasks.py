from celery import shared_task

from .rollback import auto_rollback_check


@shared_task(name="monitoring.tasks.check_canaries")
def check_canaries() -> list[int]:
    return [incident.pk for incident in auto_rollback_check()]
