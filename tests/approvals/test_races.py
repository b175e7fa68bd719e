"""The escalation beat and reviewers' decisions on one request at the same moment: whichever
takes the request first acts, the other finds it moved on; nothing is decided twice."""

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models.functions import Now

from approvals import services
from approvals.models import ApprovalDecision
from controlplane.errors import Conflict
from controlplane.models import AuditEvent
from runs.models import PendingAction, Run
from tests.integration.races import overlapping

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are what is tested"),
]


def overdue(pending: PendingAction, **fields) -> None:
    PendingAction.objects.filter(pk=pending.pk).update(due_at=Now() - timedelta(seconds=1), **fields)


def approving(pending: PendingAction, user):
    return lambda: services.approval_decide(
        pending_action_id=pending.pk, decision="approve", reason="go", user=user
    )


def escalating(pending: PendingAction):
    return lambda: services.approval_escalate(pending_action_id=pending.pk)


def actions(pending: PendingAction) -> list[str]:
    return list(
        AuditEvent.objects.filter(object_id=str(pending.pk), action__startswith="approval.")
        .order_by("seq")
        .values_list("action", flat=True)
    )


def test_a_decision_being_made_keeps_the_beat_away(parked, reviewer):
    pending = parked()
    overdue(pending)
    decided, escalated = overlapping(approving(pending, reviewer), escalating(pending))
    assert isinstance(decided, ApprovalDecision) and escalated is None
    pending.refresh_from_db()
    assert (pending.status, pending.approver_group) == (PendingAction.Status.APPROVED, "reviewer")
    assert actions(pending) == ["approval.requested", "approval.decided"]
    assert Run.objects.get(pk=pending.run_id).status == Run.Status.QUEUED


def test_an_approval_arriving_as_the_request_expires_is_refused(parked, admin_user):
    pending = parked()
    overdue(pending, approver_group="admin")  # the end of the chain: overdue means expired
    expired, decided = overlapping(escalating(pending), approving(pending, admin_user))
    assert isinstance(expired, PendingAction)
    assert isinstance(decided, Conflict) and "already expired" in decided.detail
    assert not ApprovalDecision.objects.filter(pending_action=pending).exists()
    assert actions(pending) == ["approval.requested", "approval.expired"]
    assert Run.objects.get(pk=pending.run_id).status == Run.Status.REJECTED


def test_an_approval_made_as_the_request_expires_stands(parked, admin_user):
    pending = parked()
    overdue(pending, approver_group="admin")
    decided, expired = overlapping(approving(pending, admin_user), escalating(pending))
    assert isinstance(decided, ApprovalDecision) and expired is None
    assert actions(pending) == ["approval.requested", "approval.decided"]
    assert Run.objects.get(pk=pending.run_id).status == Run.Status.QUEUED


def test_a_decision_waiting_behind_an_escalation_is_judged_on_the_new_group(parked, reviewer):
    pending = parked()
    overdue(pending)
    escalated, decided = overlapping(escalating(pending), approving(pending, reviewer))
    assert isinstance(escalated, PendingAction) and escalated.approver_group == "platform"
    assert not isinstance(decided, ApprovalDecision), decided
    assert decided.status_code == 403
    pending.refresh_from_db()
    assert (pending.status, pending.approver_group) == (PendingAction.Status.PENDING, "platform")
    assert actions(pending) == ["approval.requested", "approval.escalated", "approval.refused"]
