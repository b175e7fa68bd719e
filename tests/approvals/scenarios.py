"""Inputs and steps shared by the approval tests."""

from approvals.models import ReviewerClearance
from runs import services as run_services
from runs.models import PendingAction, Run

SMALL_REFUND = {"text": "Please refund order #123, I want my money back: a refund of $120"}
LARGE_REFUND = {"text": "Refund order #123 now, I want my money back: a refund of $750"}
HIGH_VALUE_REFUND = {"text": "Refund order #123 now, I want my money back: a refund of $6000"}


def advance(run: Run) -> Run:
    run_services.run_advance(run_id=str(run.pk), worker="test")
    return Run.objects.get(pk=run.pk)


def pending_of(run: Run) -> PendingAction:
    return PendingAction.objects.get(run=run, status=PendingAction.Status.PENDING)


def clear(user, level: str) -> None:
    ReviewerClearance.objects.update_or_create(
        user=user, defaults={"level": PendingAction.SENSITIVITY_RANKS[level]}
    )
