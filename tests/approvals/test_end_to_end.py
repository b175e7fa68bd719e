"""A real worker parks a run at its approval point; a reviewer approves over HTTP; the worker
resumes the run and carries out exactly the approved action."""

import pytest

from controlplane.audit import verify_chain
from controlplane.models import AuditEvent
from runs.models import Effect, PendingAction, Run
from tests.support.waiting import wait_for

from .scenarios import SMALL_REFUND

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("worker")]
DECIDE = ("approvals:read", "approvals:decide")


def test_a_run_parks_a_reviewer_approves_over_the_api_and_the_worker_finishes_it(
    demo_registry, client_for, requester, reviewer, worker
):
    submitted = client_for(requester).post(
        "/api/v1/tasks",
        {
            "workflow": "support_case_resolution",
            "channel": "staging",
            "case_id": "CASE-1001",
            "input": SMALL_REFUND,
        },
        format="json",
    )
    assert submitted.status_code == 201
    run_id = submitted.json()["run_id"]
    pending = wait_for(
        lambda: PendingAction.objects.filter(run_id=run_id, status="pending").first(),
        what="the run to park at its approval point",
    )
    assert Run.objects.get(pk=run_id).status == Run.Status.WAITING_APPROVAL
    assert not Effect.objects.filter(run_id=run_id).exists()

    reviewer_api = client_for(reviewer, DECIDE)
    inbox = reviewer_api.get("/api/v1/approvals?status=pending").json()["results"]
    assert [row["id"] for row in inbox] == [pending.pk]
    decided = reviewer_api.post(
        f"/api/v1/approvals/{pending.pk}/decision",
        {"decision": "approve", "reason": "refund ok"},
        format="json",
    )
    assert decided.status_code == 201, decided.json()

    try:
        run = wait_for(
            lambda: Run.objects.filter(pk=run_id, status=Run.Status.SUCCEEDED).first(),
            what="the worker to finish the approved run",
        )
    except AssertionError:
        print(Run.objects.filter(pk=run_id).values("status", "error", "current_state").first())
        print(worker.log_path.read_text()[-3000:])
        raise
    effect = Effect.objects.get(run=run)
    assert effect.tool == "crm.update_case" and effect.status == Effect.Status.COMMITTED
    assert effect.args == pending.proposed_action["args"]  # exactly the approved action
    actions = list(AuditEvent.objects.filter(run_id=run_id).order_by("seq").values_list("action", flat=True))
    assert actions.index("approval.decided") < actions.index("run.approved") < actions.index("run.succeeded")
    assert verify_chain().ok
