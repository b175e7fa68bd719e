"""A real Celery worker process executes runs submitted over HTTP."""

import json
import time
import urllib.request

import pytest

from controlplane.audit import verify_chain
from controlplane.identity import Actor, api_key_issue
from controlplane.models import AuditEvent
from runs import services
from runs.models import Run, StepCheckpoint
from runs.tasks import advance_run
from tests.factories import RunFactory, UserFactory
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("worker")]


def http(
    method: str, url: str, key: str, body: dict | None = None, headers: dict | None = None
) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_task_submitted_over_http_is_run_by_the_worker(live_server, worker):
    user = UserFactory(username="requester")
    key = api_key_issue(user=user, name="e2e", issued_by=Actor("tests", kind="system")).secret
    task = {"workflow": "builtin.intake", "case_id": "CASE-42", "input": {"text": "the app shows an error"}}

    status, accepted = http(
        "POST", f"{live_server.url}/api/v1/tasks", key, task, {"Idempotency-Key": "e2e-1"}
    )
    assert status == 201
    run_url = f"{live_server.url}/api/v1/runs/{accepted['run_id']}"

    def finished():
        body = http("GET", run_url, key)[1]
        return body if body["status"] == "succeeded" else None

    try:
        run = wait_for(finished, what="the run to succeed")
    except AssertionError:
        raise AssertionError(f"run did not finish; worker log:\n{worker.log()}") from None
    assert [step["state"] for step in run["steps"]] == ["classify", "acknowledge"]
    assert run["steps"][1]["output"]["message"] == "Case CASE-42: your incident has been received."

    events = http("GET", f"{run_url}/events", key)[1]
    assert [e["action"] for e in events] == [
        "run.created",
        "run.started",
        "run.step.completed",
        "run.step.completed",
        "run.succeeded",
    ]
    assert {e["actor"] for e in events[1:]} == {"system:worker"}
    assert all(e["trace_id"] == accepted["trace_id"] for e in events)
    assert verify_chain().ok

    status, repeat = http("POST", f"{live_server.url}/api/v1/tasks", key, task, {"Idempotency-Key": "e2e-1"})
    assert (status, repeat["run_id"], repeat["status"]) == (200, accepted["run_id"], "succeeded")


def test_duplicate_deliveries_advance_a_run_once(worker):
    run = services.task_submit(
        requester=UserFactory(),
        actor=Actor("tests", kind="system"),
        workflow="builtin.intake",
        case_id="DUP",
        input={"text": "hi"},
    ).run
    for _ in range(3):
        advance_run.delay(str(run.pk))

    wait_for(lambda: Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED, what="the run to succeed")
    time.sleep(1)  # let the duplicate messages be consumed too
    assert StepCheckpoint.objects.filter(run=run).count() == 2
    assert AuditEvent.objects.filter(run_id=str(run.pk), action="run.succeeded").count() == 1
    assert verify_chain().ok


def test_a_run_whose_message_was_lost_is_recovered_by_the_sweeper(worker):
    # A run committed without any broker message, as if Redis had lost it; its lease is over.
    run = RunFactory(lease_expires_at="2020-01-01T00:00:00Z")

    assert services.runs_sweep_expired_leases() == 1

    wait_for(lambda: Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED, what="the swept run")
    actions = list(AuditEvent.objects.filter(run_id=str(run.pk)).values_list("action", flat=True))
    assert actions[0] == "run.lease.expired" and actions[-1] == "run.succeeded"
