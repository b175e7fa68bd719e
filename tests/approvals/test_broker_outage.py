"""A reviewer's decision while the broker is down: it is recorded and answered as usual."""

import logging

import pytest

from approvals.models import ApprovalDecision
from runs.models import PendingAction, Run

pytestmark = pytest.mark.django_db


def test_an_approval_made_while_the_broker_is_down_stands_and_the_reviewer_is_told(
    parked, reviewer, signed_in, broker_down, django_capture_on_commit_callbacks, caplog, settings
):
    settings.APPROVAL_NOTIFIERS = ["approvals.notifiers.EmailNotifier"]
    pending = parked()
    with (
        caplog.at_level(logging.WARNING, "controlplane.broker"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = signed_in(reviewer).post(
            f"/approvals/{pending.pk}/decision/", {"decision": "approve", "reason": "ok"}
        )

    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.APPROVED
    assert ApprovalDecision.objects.filter(pending_action=pending, reviewer=reviewer).exists()
    run = Run.objects.get(pk=pending.run_id)
    assert run.status == Run.Status.QUEUED and run.lease_expires_at  # the lease sweeper's to send
    assert "lease sweeper" in caplog.text and "this notice is not sent" in caplog.text
