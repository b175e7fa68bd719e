import base64
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.audit import verify_chain
from controlplane.models import AuditEvent
from controlplane.strict_json import MAX_DEPTH
from runs.models import Run
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db

TASK = {"workflow": "builtin.intake", "case_id": "CASE-1", "input": {"text": "refund please"}}


def post_task(client, body=TASK, key=None, **extra):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(
        "/api/v1/tasks",
        json.dumps(body) if not isinstance(body, bytes) else body,
        content_type="application/json",
        **headers,
        **extra,
    )


def test_submit_creates_a_queued_run_and_audits_it(requester, client_for):
    response = post_task(client_for(requester), key="k-1")

    assert response.status_code == 201
    body = response.json()
    run = Run.objects.get(pk=body["run_id"])
    assert body == {
        "run_id": str(run.pk),
        "status": "queued",
        "trace_id": run.trace_id,
        "release_id": "",
        "channel": "",
    }
    assert response.headers["Location"] == f"/api/v1/runs/{run.pk}"
    assert (run.workflow, run.case_id, run.input, run.current_state) == (
        "builtin.intake",
        "CASE-1",
        {"text": "refund please"},
        "classify",
    )
    event = AuditEvent.objects.get(action="run.created")
    assert event.run_id == str(run.pk)
    assert event.actor.startswith("user:requester key:")
    assert verify_chain().ok


def test_same_idempotency_key_and_body_returns_the_same_run(requester, client_for):
    client = client_for(requester)
    first = post_task(client, key="k-1")
    # Same content in another key order and spacing: the canonical body is what counts.
    again = post_task(
        client,
        body={"input": {"text": "refund please"}, "case_id": "CASE-1", "workflow": "builtin.intake"},
        key="k-1",
    )

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["run_id"] == first.json()["run_id"]
    assert Run.objects.count() == 1
    assert AuditEvent.objects.filter(action="run.created").count() == 1


def test_same_idempotency_key_with_another_body_is_a_conflict(requester, client_for):
    client = client_for(requester)
    post_task(client, key="k-1")
    response = post_task(client, body={**TASK, "case_id": "CASE-2"}, key="k-1")

    assert response.status_code == 409
    assert response.json()["type"] == "urn:baton:problem:conflict"
    assert response["Content-Type"] == "application/problem+json"
    assert Run.objects.count() == 1


def test_idempotency_keys_belong_to_their_requester(requester, outsider, client_for):
    mine = post_task(client_for(requester), key="shared")
    theirs = post_task(client_for(outsider), body={**TASK, "case_id": "OTHER"}, key="shared")

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["run_id"] != theirs.json()["run_id"]


def test_without_a_key_each_submission_is_a_new_run(requester, client_for):
    client = client_for(requester)
    assert post_task(client).json()["run_id"] != post_task(client).json()["run_id"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'{"workflow": "builtin.intake",', 400, "Malformed JSON"),
        (b'{"workflow": "a", "workflow": "b"}', 400, "duplicate key"),
        (b'{"workflow": "builtin.intake", "case_id": "C\\u0000", "input": {}}', 400, "NUL"),
        (b'{"workflow": "builtin.intake\x00", "case_id": "C", "input": {}}', 400, "NUL"),
        (b'{"workflow": "builtin.intake", "case_id": "C", "input": {"n": NaN}}', 400, "NaN"),
        (b'{"workflow": "builtin.intake", "case_id": "C", "input": {"n": 9007199254740993}}', 400, "range"),
        (b'{"workflow": "builtin.intake", "case_id": "C", "input": {"n": 1e400}}', 400, "too large"),
        (b'{"workflow": "builtin.intake", "case_id": "C", "input": {"n": -1E+400}}', 400, "too large"),
        (b'{"workflow": "builtin.intake", "case_id": "C", "input": {"t": "\\ud800"}}', 400, "lone surrogate"),
        (b'{"workflow": "builtin.intake", "case_id": "C", "input": {"\\udfff": 1}}', 400, "lone surrogate"),
        (
            b'{"workflow": "builtin.intake", "case_id": "C", "input": {"t": '
            + b"[" * 600
            + b"]" * 600
            + b"}}",
            400,
            "nested too deeply",
        ),
        (b"\xff\xfe", 400, "UTF-8"),
        (b"[1, 2]", 422, "dictionary"),
        (json.dumps({**TASK, "priority": "high"}).encode(), 422, "priority"),
        (json.dumps({**TASK, "input": "text"}).encode(), 422, "input"),
        (json.dumps({**TASK, "workflow": "nope"}).encode(), 422, "Unknown workflow"),
        (json.dumps({"workflow": "builtin.intake"}).encode(), 422, "case_id"),
    ],
    ids=[
        "truncated",
        "duplicate-key",
        "escaped-nul",
        "raw-nul",
        "nan",
        "huge-int",
        "infinite-float",
        "negative-infinite-float",
        "lone-surrogate",
        "lone-surrogate-key",
        "deep-nesting",
        "bad-utf8",
        "array",
        "unknown-field",
        "input-not-object",
        "unknown-workflow",
        "missing-field",
    ],
)
def test_bad_input_gets_a_problem_and_writes_nothing(requester, client_for, body, status, needle):
    response = post_task(client_for(requester), body=body)

    assert response.status_code == status
    problem = response.json()
    assert set(problem) >= {"type", "title", "detail", "status"}
    assert needle in json.dumps(problem)
    assert not Run.objects.exists()
    assert not AuditEvent.objects.filter(action="run.created").exists()


def nested_input(depth: int) -> dict:
    """A task whose body nests `depth` levels: the body, its input, then lists."""
    return {**TASK, "input": {"t": json.loads("[" * (depth - 2) + "]" * (depth - 2))}}


def test_nesting_is_accepted_up_to_the_limit(requester, client_for):
    client = client_for(requester)
    assert post_task(client, body=nested_input(MAX_DEPTH)).status_code == 201
    refused = post_task(client, body=nested_input(MAX_DEPTH + 1))
    assert refused.status_code == 400
    assert refused.json()["detail"] == f"Malformed JSON: nested too deeply (more than {MAX_DEPTH} levels)."
    assert Run.objects.count() == 1


def test_oversized_body_is_413(requester, client_for, settings):
    settings.MAX_REQUEST_BODY_BYTES = 1024
    response = post_task(client_for(requester), body={**TASK, "input": {"text": "x" * 2000}})
    assert response.status_code == 413
    assert response.json()["type"] == "urn:baton:problem:payload-too-large"
    assert not Run.objects.exists()


def test_bad_idempotency_key_is_400(requester, client_for):
    response = post_task(client_for(requester), key="k" * 201)
    assert response.status_code == 400
    assert not Run.objects.exists()


def test_wrong_content_type_is_415(requester, client_for):
    response = client_for(requester).post("/api/v1/tasks", "workflow=x", content_type="text/plain")
    assert response.status_code == 415


def test_unknown_run_is_a_404_problem(requester, client_for):
    response = client_for(requester).get("/api/v1/runs/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:baton:problem:not-found"
    assert client_for(requester).get("/api/v1/nothing-here").json()["status"] == 404


@pytest.mark.parametrize(
    "position",
    [
        "not-a-date",
        "2026-02-30 00:00:00+00:00",
        pytest.param(
            "9999-12-31 23:59:59-01:00",  # past the last time Python holds once in UTC
            marks=pytest.mark.skipif(
                connection.vendor == "postgresql", reason="PostgreSQL holds it: a valid position there"
            ),
        ),
    ],
)
def test_a_forged_page_cursor_is_a_404_problem(platform_user, client_for, position):
    RunFactory()
    cursor = base64.b64encode(f"p={position}".encode()).decode()
    response = client_for(platform_user, scopes=["runs:read"]).get(f"/api/v1/runs?cursor={cursor}")
    assert response.status_code == 404
    assert response.json() == {
        "type": "urn:baton:problem:not-found",
        "title": "Not found",
        "status": 404,
        "detail": "Invalid cursor",
    }


def test_pages_follow_one_another_by_their_cursors(platform_user, client_for):
    made = {str(run.pk) for run in RunFactory.create_batch(3)}
    client = client_for(platform_user, scopes=["runs:read"])
    first = client.get("/api/v1/runs?page_size=2").json()
    second = client.get(first["next"]).json()
    assert second["next"] is None
    assert {run["id"] for run in first["results"] + second["results"]} == made


@pytest.mark.parametrize("page_size", [1, 2, 50])
def test_pages_hold_every_run_once_in_order(platform_user, requester, client_for, page_size):
    """Runs the database stamped (`Now()`) and runs Django saved since, one after the other."""
    submit = client_for(requester)
    for n in range(3):
        submit.post(
            "/api/v1/tasks", {"workflow": "builtin.intake", "case_id": f"C-{n}", "input": {}}, format="json"
        )
    RunFactory.create_batch(2)
    client = client_for(platform_user, scopes=["runs:read"])
    newest_first = [run["id"] for run in client.get("/api/v1/runs?page_size=200").json()["results"]]

    paged, url = [], f"/api/v1/runs?page_size={page_size}"
    while url and len(paged) <= len(newest_first):
        page = client.get(url).json()
        paged += [run["id"] for run in page["results"]]
        url = page["next"]

    assert paged == newest_first and len(paged) == 5


def test_runs_are_visible_to_their_requester_and_to_operators(requester, outsider, auditor, client_for):
    run = RunFactory(requested_by=requester)
    path = f"/api/v1/runs/{run.pk}"

    assert client_for(requester).get(path).status_code == 200
    assert client_for(outsider).get(path).status_code == 404
    assert client_for(auditor, scopes=["runs:read"]).get(path).status_code == 200
    assert client_for(requester, scopes=["tasks:write"]).get(path).status_code == 403


def test_run_detail_shows_status_steps_and_events(requester, client_for):
    run_id = post_task(client_for(requester)).json()["run_id"]
    client = client_for(requester)

    detail = client.get(f"/api/v1/runs/{run_id}").json()
    assert detail["status"] == "queued"
    assert detail["steps"] == []
    assert detail["input"] == TASK["input"]
    events = client.get(f"/api/v1/runs/{run_id}/events").json()
    assert [e["action"] for e in events] == ["run.created"]


def test_run_list_query_count_does_not_grow_with_rows(platform_user, client_for):
    client = client_for(platform_user, scopes=["runs:read"])
    client.get("/api/v1/runs")  # the key's first use also records when it was last used
    RunFactory.create_batch(2)
    with CaptureQueriesContext(connection) as few:
        assert len(client.get("/api/v1/runs").json()["results"]) == 2
    RunFactory.create_batch(20)
    with CaptureQueriesContext(connection) as many:
        assert len(client.get("/api/v1/runs").json()["results"]) == 22
    assert len(many) == len(few)
