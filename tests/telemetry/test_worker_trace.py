"""One connected trace per run with a real worker: the web side (this process) and a Celery
worker process both export over OTLP/HTTP to a loopback receiver, and every span of a run
that waited for an approval forms one tree in the trace the API request started."""

import pytest

from controlplane import telemetry
from runs.models import PendingAction, Run
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.worker]
SMALL_REFUND = {"text": "Please refund order #123, I want my money back: a refund of $120"}
DECIDE = ("approvals:read", "approvals:decide")


def test_a_run_approved_between_two_deliveries_is_one_trace_from_the_api_request(
    traced_web, traced_worker, otlp_receiver, demo_registry, client_for, requester, reviewer
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
    run_id, trace_id = submitted.json()["run_id"], submitted.json()["trace_id"]
    pending = wait_for(
        lambda: PendingAction.objects.filter(run_id=run_id, status="pending").first(),
        what="the run to park at its approval point",
    )
    decided = client_for(reviewer, DECIDE).post(
        f"/api/v1/approvals/{pending.pk}/decision", {"decision": "approve", "reason": "ok"}, format="json"
    )
    assert decided.status_code == 201, decided.json()
    try:
        wait_for(
            lambda: Run.objects.filter(pk=run_id, status=Run.Status.SUCCEEDED).exists(),
            what="the worker to finish the approved run",
        )
    except AssertionError:
        print(Run.objects.filter(pk=run_id).values("status", "error", "current_state").first())
        print(traced_worker.log()[-5000:])
        raise
    telemetry.flush_tracing()

    def run_trace() -> list | None:
        spans = [s for s in otlp_receiver.received() if s.trace_id == trace_id]
        runs = [s for s in spans if s.name == "run"]
        # The second delivery's run span ends after its last step: its arrival closes the run.
        return spans if len(runs) == 2 and all(r.end_ns for r in runs) else None

    spans = wait_for(run_trace, what="the worker's spans of both deliveries")
    run = Run.objects.get(pk=run_id)
    assert run.trace_id == trace_id

    # Every span of the run, wherever it was made, is in this trace...
    of_the_run = [s for s in otlp_receiver.received() if s.attributes.get("run.id") == run_id]
    assert {s.trace_id for s in of_the_run} == {trace_id}
    # ...and the trace is one tree, rooted at the API request.
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_id not in ids]
    assert [(r.name, r.service, r.parent_id) for r in roots] == [("POST api/v1/tasks", "baton-web", "")]
    assert run.trace_parent == roots[0].span_id

    made_by = {(s.name, s.service) for s in spans}
    assert {
        ("run", "baton-worker"),
        ("step", "baton-worker"),
        ("policy.decide", "baton-worker"),
        ("model.call", "baton-worker"),
        ("tool.call", "baton-worker"),
        ("approval.wait", "baton-web"),
        ("policy.decide", "baton-web"),  # run.start, in the request
        ("run/runs.tasks.advance_run", "baton-worker"),  # Celery's span of the first delivery
    } <= made_by
    runs = [s for s in spans if s.name == "run"]
    assert all(r.parent_id == run.trace_parent for r in runs)
    # The resumed delivery was sent by the reviewer's request, in another trace: a link, not a parent.
    assert sum(link[0] != trace_id for r in runs for link in r.links) == 1
    (wait,) = [s for s in spans if s.name == "approval.wait"]
    assert wait.parent_id == run.trace_parent
    assert wait.attributes["approval.outcome"] == "approved"
    steps = [s.attributes["step"] for s in sorted(spans, key=lambda s: s.start_ns) if s.name == "step"]
    assert steps == ["triage", "retrieve", "draft", "validate", "approve", "commit", "commit"]
    assert [s.attributes["tool.name"] for s in spans if s.name == "tool.call"] == [
        "kb_search",
        "crm.update_case",
    ]
    assert all(s.attributes["tenant.id"] == "default" for s in spans if s.name in ("run", "step"))
