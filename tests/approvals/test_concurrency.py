"""Decisions racing each other on PostgreSQL: the request's row lock lets exactly one win."""

from collections.abc import Callable

import pytest
from django.db import connection

from approvals import services
from approvals.models import ApprovalDecision
from controlplane.errors import Conflict
from controlplane.models import AuditEvent
from runs.models import PendingAction, Run
from tests.factories import UserFactory
from tests.integration.races import at_once

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are what is tested"),
]


def race(pending: PendingAction, users: list) -> list:
    """Every user decides at the same moment, each on its own connection; their outcomes."""

    def decide(user) -> Callable[[], ApprovalDecision]:
        return lambda: services.approval_decide(
            pending_action_id=pending.pk, decision="approve", reason="go", user=user
        )

    return at_once(*(decide(user) for user in users))


@pytest.fixture
def reviewers(db):
    return [UserFactory(username=f"reviewer-{i}", roles=["reviewer"]) for i in range(4)]


def test_four_reviewers_at_once_exactly_one_decides(parked, reviewers):
    pending = parked()
    outcomes = race(pending, reviewers)
    won = [o for o in outcomes if isinstance(o, ApprovalDecision)]
    lost = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(won) == 1 and len(lost) == 3
    assert all("already approved" in error.detail for error in lost)
    assert ApprovalDecision.objects.filter(pending_action=pending).count() == 1
    assert AuditEvent.objects.filter(action="run.approved", run_id=str(pending.run_id)).count() == 1
    assert Run.objects.get(pk=pending.run_id).status == Run.Status.QUEUED


def test_a_double_click_records_one_decision(parked, reviewer):
    pending = parked()
    outcomes = race(pending, [reviewer] * 3)
    assert sum(isinstance(o, ApprovalDecision) for o in outcomes) == 1
    assert sum(isinstance(o, Conflict) for o in outcomes) == 2
    assert ApprovalDecision.objects.filter(pending_action=pending).count() == 1


def test_a_quorum_of_two_counts_both_concurrent_approvals(parked, reviewers):
    pending = parked()
    PendingAction.objects.filter(pk=pending.pk).update(quorum=2)
    outcomes = race(pending, reviewers[:2])
    assert all(isinstance(o, ApprovalDecision) for o in outcomes)
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.APPROVED and pending.approvals == 2
    assert AuditEvent.objects.filter(action="run.approved", run_id=str(pending.run_id)).count() == 1
