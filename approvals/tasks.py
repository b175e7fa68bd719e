"""Thin Celery tasks: escalation on a beat, notices delivered after commit."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import services
from .notifiers import ApprovalNotice, NotifierError, load_notifier


@shared_task(autoretry_for=(OperationalError, InterfaceError), retry_backoff=True, max_retries=5)
def escalate_due_approvals() -> int:
    return services.approvals_escalate_due()


@shared_task(
    autoretry_for=(NotifierError, OperationalError, InterfaceError),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=6,
)
def deliver_approval_notice(notifier_path: str, notice: dict) -> None:
    load_notifier(notifier_path).send(ApprovalNotice(**notice))
