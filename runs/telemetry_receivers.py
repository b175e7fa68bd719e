"""The `approval.wait` span: from a pending action's creation to its decision or expiry.

Its times are only known when the wait is over, so it is recorded then, after the commit
that closed it, as a finished span of the run's trace."""

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from controlplane.telemetry import record_run_span, tracing_enabled

from .models import PendingAction


@receiver(post_save, sender=PendingAction, dispatch_uid="runs.approval_wait_span")
def approval_wait_ended(sender, instance: PendingAction, created: bool, update_fields=None, **kwargs) -> None:
    # Deciding and expiring both set `decided_at` (to the database clock) with update_fields.
    if created or not update_fields or "decided_at" not in update_fields or not tracing_enabled():
        return
    transaction.on_commit(lambda: _record_approval_wait(instance.pk))


def _record_approval_wait(pending_action_id: int) -> None:
    pending = PendingAction.objects.select_related("run").get(pk=pending_action_id)
    record_run_span(
        pending.run,
        "approval.wait",
        start=pending.created_at,
        end=pending.decided_at,
        attributes={
            "step": pending.state,
            "approval.pending_action_id": pending.pk,
            "approval.outcome": pending.status,
            "approval.approver_group": pending.approver_group,
        },
    )
