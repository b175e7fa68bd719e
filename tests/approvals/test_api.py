"""/api/v1/approvals: the caller's view, the detail a reviewer needs, and decisions."""

import base64

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from approvals.models import ApprovalDecision
from controlplane.identity import ADMIN, PLATFORM, REVIEWER, actor_for
from controlplane.models import AuditEvent
from registry.models import Agent
from registry.services.bundles import bundle_apply
from runs import services as run_services
from runs.models import PendingAction, Run
from tests.factories import RunFactory, UserFactory

from .scenarios import HIGH_VALUE_REFUND, SMALL_REFUND, advance, clear, pending_of

pytestmark = pytest.mark.django_db
READ, DECIDE = ("approvals:read",), ("approvals:read", "approvals:decide")
APPROVE = {"decision": "approve"}


def decision_url(pending) -> str:
    return f"/api/v1/approvals/{pending.pk}/decision"


def handoff(requester, n: int = 1, sensitivity: str = "internal") -> list[PendingAction]:
    """Requests on built-in runs handed to a human: cheap to make in numbers."""
    made = []
    for _ in range(n):
        run = RunFactory(requested_by=requester, status=Run.Status.WAITING_APPROVAL, sensitivity=sensitivity)
        made.append(
            PendingAction.objects.create(
                run=run,
                state="classify",
                reasons=["classify handed the case to a human"],
                proposed_action={"handoff": "classify"},
                action_hash=f"{run.pk.hex:0<64}",
                approvers=["reviewer"],
            )
        )
    return made


def test_the_pending_list_is_the_callers_inbox_with_a_constant_number_of_queries(
    client_for, reviewer, requester
):
    client = client_for(reviewer, READ)
    client.get("/api/v1/approvals")  # the key's first use is recorded once: not part of the count
    handoff(requester, 2)
    with CaptureQueriesContext(connection) as few:
        first = client.get("/api/v1/approvals?status=pending")
    handoff(requester, 8)
    with CaptureQueriesContext(connection) as many:
        second = client.get("/api/v1/approvals?status=pending")
    assert first.status_code == 200 and len(first.json()["results"]) == 2
    assert len(second.json()["results"]) == 10
    # The key, the reviewer's groups and clearance (which hold the roles too), the rows.
    assert len(many) == len(few) == 3


def test_filters_by_workflow_sensitivity_and_risk(client_for, reviewer, requester, parked):
    clear(reviewer, "confidential")
    handoff(requester, 1, sensitivity="confidential")
    parked()
    client = client_for(reviewer, READ)
    rows = client.get("/api/v1/approvals?status=pending").json()["results"]
    assert len(rows) == 2
    by_workflow = client.get("/api/v1/approvals?workflow=support_case_resolution").json()["results"]
    assert [row["state"] for row in by_workflow] == ["commit"]
    assert [r["state"] for r in client.get("/api/v1/approvals?risk=high").json()["results"]] == ["commit"]
    confidential = client.get("/api/v1/approvals?sensitivity=confidential").json()["results"]
    assert [row["state"] for row in confidential] == ["classify"]
    bad = client.get("/api/v1/approvals?risk=extreme")
    assert bad.status_code == 422 and bad["Content-Type"] == "application/problem+json"
    assert client.get("/api/v1/approvals?status=waiting").status_code == 422


def test_the_detail_holds_everything_a_reviewer_needs(client_for, reviewer, parked):
    pending = parked()
    body = client_for(reviewer, READ).get(f"/api/v1/approvals/{pending.pk}").json()
    assert body["original_input"] == pending.run.input
    assert [step["state"] for step in body["steps"]] == ["triage", "retrieve", "draft", "validate", "approve"]
    assert body["proposed_action"]["tool"] == "crm.update_case"
    assert body["action_hash"] == pending.action_hash
    assert any("irreversible" in reason for reason in body["reasons"])
    assert body["risk_level"] == "high" and body["risk"]["side_effect"] == "irreversible"
    assert body["approvers"] == ["reviewer"] and body["quorum"] == 1 and body["decisions"] == []
    assert body["due_at"] and body["requested_by"] == "requester" and body["status"] == "pending"


def test_a_reviewer_approves_over_the_api_and_the_run_resumes(client_for, reviewer, parked):
    pending = parked()
    response = client_for(reviewer, DECIDE).post(
        decision_url(pending), {"decision": "approve", "reason": "ok"}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["request_status"] == "approved" and body["reviewer"] == "reviewer"
    assert body["action_hash"] == pending.action_hash
    assert Run.objects.get(pk=pending.run_id).status == Run.Status.QUEUED
    again = client_for(reviewer, DECIDE).post(decision_url(pending), {"decision": "approve"}, format="json")
    assert again.status_code == 409 and "already approved" in again.json()["detail"]


def test_bad_decisions_are_clear_4xx(client_for, reviewer, parked):
    pending = parked()
    client = client_for(reviewer, DECIDE)
    no_reason = client.post(decision_url(pending), {"decision": "reject"}, format="json")
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["detail"]
    unknown = client.post(decision_url(pending), {"decision": "approve", "extra": 1}, format="json")
    assert unknown.status_code == 422
    wrong = client.post(decision_url(pending), {"decision": "yes"}, format="json")
    assert wrong.status_code == 422
    missing = client.post("/api/v1/approvals/999999/decision", {"decision": "approve"}, format="json")
    assert missing.status_code == 404
    assert not ApprovalDecision.objects.exists()


@pytest.mark.parametrize(
    ("who", "scopes", "read", "decide"),
    [
        ("anonymous", None, 401, 401),
        ("requester", DECIDE, 403, 403),  # no reviewer role
        ("requester_reviewer", DECIDE, 404, 404),  # a reviewer, but their own request: not in their view
        ("agent", DECIDE, 403, 403),
        ("agent_reviewer", DECIDE, 404, 403),  # an agent put in the reviewer group still cannot decide
        ("other_group", DECIDE, 404, 404),
        ("low_clearance", DECIDE, 404, 404),
        ("auditor", DECIDE, 200, 403),  # reads everything, decides nothing
        ("reviewer_read_key", READ, 200, 403),  # the key lacks approvals:decide
        ("reviewer", DECIDE, 200, 201),
    ],
)
def test_permission_matrix(
    who, scopes, read, decide, client_for, api_client, parked, requester, reviewer, platform_user, auditor
):
    reviewers = Group.objects.get(name=REVIEWER)
    agent_user = Agent.objects.get(slug="case_manager").service_user
    pending = parked(sensitivity="confidential")
    clear(reviewer, "confidential")
    users = {
        "requester": requester,
        "requester_reviewer": requester,
        "agent": agent_user,
        "agent_reviewer": agent_user,
        "other_group": platform_user,
        "low_clearance": reviewer,
        "auditor": auditor,
        "reviewer_read_key": reviewer,
        "reviewer": reviewer,
    }
    if who in ("requester_reviewer", "agent_reviewer"):
        users[who].groups.add(reviewers)
    if who == "low_clearance":
        clear(reviewer, "internal")
    client = api_client if who == "anonymous" else client_for(users[who], scopes)
    assert client.get(f"/api/v1/approvals/{pending.pk}").status_code == read
    response = client.post(decision_url(pending), {"decision": "approve", "reason": "ok"}, format="json")
    assert response.status_code == decide, response.json()
    assert response["Content-Type"] == ("application/json" if decide == 201 else "application/problem+json")
    pending.refresh_from_db()
    assert pending.status == ("approved" if decide == 201 else "pending")


def test_refusals_carry_the_policy_reasons(client_for, requester, parked):
    # An admin sees every request, their own too: policy refuses what the view allows.
    requester.groups.add(Group.objects.get_or_create(name=ADMIN)[0])
    pending = parked()
    client = client_for(requester, DECIDE)
    response = client.post(decision_url(pending), {"decision": "approve"}, format="json")
    assert response.status_code == 403
    assert "requester cannot approve their own request" in response.json()["detail"]


def test_a_decision_on_a_request_outside_the_callers_view_reveals_and_records_nothing(
    client_for, reviewer, parked
):
    pending = parked()
    PendingAction.objects.filter(pk=pending.pk).update(approver_group="platform")
    client = client_for(reviewer, DECIDE)
    events = AuditEvent.objects.count()

    response = client.post(decision_url(pending), {"decision": "approve"}, format="json")

    assert response.status_code == 404 and "platform" not in response.json()["detail"]
    assert AuditEvent.objects.count() == events and not ApprovalDecision.objects.exists()


def test_history_lists_closed_requests_by_status(client_for, reviewer, auditor, parked):
    pending = parked()
    client_for(reviewer, DECIDE).post(decision_url(pending), {"decision": "approve"}, format="json")
    rows = client_for(auditor, READ).get("/api/v1/approvals?status=approved").json()["results"]
    assert [row["id"] for row in rows] == [pending.pk]
    assert client_for(auditor, READ).get("/api/v1/approvals?status=pending").json()["results"] == []


def test_the_endpoints_are_in_the_openapi_schema(client, admin_user):
    client.force_login(admin_user)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    for path in ("/api/v1/approvals", "/api/v1/approvals/{id}", "/api/v1/approvals/{id}/decision"):
        assert path in schema


def test_the_list_rows_are_what_the_declared_fields_give(parked, requester, reviewer):
    from rest_framework import serializers

    from approvals.api.serializers import LIST_VALUES, ApprovalListSerializer

    rows = [parked(), *handoff(requester, 1)]
    PendingAction.objects.filter(pk=rows[0].pk).update(decided_at=rows[0].created_at)
    serializer = ApprovalListSerializer()
    for pending in PendingAction.objects.select_related("run", "requested_by"):
        row = PendingAction.objects.filter(pk=pending.pk).values(*LIST_VALUES).get()
        assert serializer.to_representation(row) == serializers.ModelSerializer.to_representation(
            serializer, pending
        )


def test_an_inbox_page_holds_25_requests_and_the_next_page_the_rest(client_for, reviewer, requester):
    handoff(requester, 27)
    client = client_for(reviewer, READ)
    first = client.get("/api/v1/approvals?status=pending").json()
    assert len(first["results"]) == 25 and first["next"]
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 2 and second["next"] is None
    seen = {row["id"] for row in first["results"] + second["results"]}
    assert len(seen) == 27


@pytest.mark.parametrize("position", ["not", "1.5", ""])
def test_a_forged_inbox_cursor_is_a_404_problem(client_for, reviewer, requester, position):
    handoff(requester)
    cursor = base64.b64encode(f"p={position}".encode()).decode()
    response = client_for(reviewer, READ).get(f"/api/v1/approvals?status=pending&cursor={cursor}")
    assert response.status_code == 404
    assert response.json()["detail"] == "Invalid cursor"


def _decide_to_the_platform_stage(client_for, reviewer, run: Run) -> PendingAction:
    """Through the gate and the reviewer's signature of the irreversible refund: the request then
    waits for the platform group."""
    for _ in range(2):
        pending = pending_of(advance(run))
        signed = client_for(reviewer, DECIDE).post(
            decision_url(pending), {"decision": "approve"}, format="json"
        )
        assert signed.status_code == 201, signed.json()
    pending.refresh_from_db()
    assert pending.approver_group == "platform"
    return pending


def test_whoever_issued_an_agents_key_cannot_sign_what_they_asked_for_through_it(
    client_for, reviewer, platform_user, demo_registry
):
    issued = client_for(platform_user, ("registry:write",)).post(
        "/api/v1/agents/intake_classifier/keys", {}, format="json"
    )
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.json()['key']}")
    task = {"workflow": "support_case_resolution", "channel": "staging", "case_id": "CASE-1001"}
    submitted = agent.post("/api/v1/tasks", {**task, "input": HIGH_VALUE_REFUND}, format="json")
    pending = _decide_to_the_platform_stage(
        client_for, reviewer, Run.objects.get(pk=submitted.json()["run_id"])
    )

    response = client_for(platform_user, DECIDE).post(
        decision_url(pending), {"decision": "approve", "reason": "looks fine"}, format="json"
    )

    assert response.status_code == 403
    assert "platform issued the agent key that asked for this run" in response.json()["detail"]
    assert AuditEvent.objects.filter(action="approval.refused", object_id=str(pending.pk)).exists()
    another = UserFactory(username="platform2", roles=[PLATFORM])
    signed = client_for(another, DECIDE).post(decision_url(pending), APPROVE, format="json")
    assert signed.status_code == 201 and signed.json()["request_status"] == "approved"


def test_a_requester_never_approves_their_own_request_even_where_the_bundle_would_let_them(
    client_for, requester, platform_user, support_bundle
):
    modules = support_bundle["artifacts"]["policy_bundle"]["default"]["modules"]
    del modules["approval_decide_test.rego"]
    allow = '{"allow": true, "require_approval": false, "reasons": []}'
    modules["approval_decide.rego"] = f"package baton.approval_decide\n\ndecision := {allow}\n"
    bundle_apply(bundle=support_bundle, author=platform_user, actor=actor_for(platform_user))
    requester.groups.add(Group.objects.get_or_create(name=ADMIN)[0])  # an admin sees their own requests
    run = run_services.task_submit(
        requester=requester,
        actor=actor_for(requester),
        workflow="support_case_resolution",
        case_id="CASE-1001",
        input=SMALL_REFUND,
        channel="staging",
    ).run
    pending = pending_of(advance(run))

    response = client_for(requester, DECIDE).post(
        decision_url(pending), {"decision": "approve"}, format="json"
    )

    assert response.status_code == 403
    assert "requester cannot approve their own request" in response.json()["detail"]
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.PENDING and not ApprovalDecision.objects.exists()
