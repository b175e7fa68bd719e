"""POST /api/v1/runs/{id}/cancel and /retry: operators' actions through the API."""

from datetime import datetime

import pytest

from controlplane.models import AuditEvent
from runs.models import PendingAction, Run
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db

OPERATE = ("runs:read", "runs:operate")


def _dead_letter(**fields) -> Run:
    error = "kb.search timed out after 3 attempts"
    return RunFactory(status="dead_lettered", current_state="retrieve", error=error, **fields)


def test_an_operator_cancels_a_waiting_run_and_sees_it_as_it_now_is(client_for, platform_user, requester):
    run = RunFactory(requested_by=requester, status="waiting_approval", current_state="commit")
    PendingAction.objects.create(run=run, state="commit", proposed_action={"tool": "crm.update_case"})
    api = client_for(platform_user, OPERATE)

    response = api.post(f"/api/v1/runs/{run.pk}/cancel", {"reason": "customer withdrew"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "cancelled"
    assert datetime.fromisoformat(body["finished_at"]) and datetime.fromisoformat(body["updated_at"])
    assert body["pending_action"] is None
    assert list(run.pending_actions.values_list("status", flat=True)) == ["superseded"]
    assert body == api.get(f"/api/v1/runs/{run.pk}").json()
    cancelled = AuditEvent.objects.get(run_id=str(run.pk), action="run.cancelled")
    assert cancelled.payload == {"from": "waiting_approval", "reason": "customer withdrew"}

    again = api.post(f"/api/v1/runs/{run.pk}/cancel", {}, format="json")
    assert again.status_code == 409
    assert again.json()["detail"] == "A cancelled run cannot be cancelled."


def test_an_operator_retries_a_dead_letter_with_a_repaired_input(client_for, platform_user):
    run = _dead_letter(input={"text": "original"})
    api = client_for(platform_user, OPERATE)

    response = api.post(
        f"/api/v1/runs/{run.pk}/retry",
        {"repaired_input": {"text": "repaired"}, "reason": "bad payload"},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["error"], body["finished_at"]) == ("queued", "", None)
    assert datetime.fromisoformat(body["updated_at"])
    run.refresh_from_db()
    assert run.input == {"text": "repaired"}
    retried = AuditEvent.objects.get(run_id=str(run.pk), action="run.retried")
    assert retried.payload["reason"] == "bad payload" and "input_digest_after" in retried.payload

    finished = RunFactory(status="succeeded")
    refused = api.post(f"/api/v1/runs/{finished.pk}/retry", {}, format="json")
    assert refused.status_code == 409 and "this one is succeeded" in refused.json()["detail"]


def test_run_operations_need_the_operate_scope_and_an_operators_role(client_for, platform_user, requester):
    waiting = RunFactory(requested_by=requester, status="waiting_approval")
    dead = _dead_letter(requested_by=requester)
    without_scope = client_for(platform_user, ("runs:read",))
    not_an_operator = client_for(requester, OPERATE)

    for api in (without_scope, not_an_operator):
        assert api.post(f"/api/v1/runs/{waiting.pk}/cancel", {}, format="json").status_code == 403
        assert api.post(f"/api/v1/runs/{dead.pk}/retry", {}, format="json").status_code == 403

    assert set(Run.objects.values_list("status", flat=True)) == {"waiting_approval", "dead_lettered"}
    assert not AuditEvent.objects.filter(action__in=["run.cancelled", "run.retried"]).exists()
    unknown = client_for(platform_user, OPERATE).post(
        "/api/v1/runs/00000000-0000-0000-0000-000000000000/cancel", {}, format="json"
    )
    assert unknown.status_code == 404 and unknown.json()["status"] == 404
