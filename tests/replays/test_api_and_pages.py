"""The replay API and console pages: who may use them, problem details, constant query counts,
and a replay carried out by a real worker."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from registry.models import Channel
from replays import services
from replays.models import Replay, ReplayBatch
from runs.models import Run
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db


def support_run(runs: list[Run], case_id: str = "CASE-1001") -> Run:
    return next(run for run in runs if run.case_id == case_id)


def test_api_queues_a_replay_and_reports_it(finished_demo, client_for, platform_user):
    run = support_run(finished_demo)
    api = client_for(platform_user, scopes=["runs:operate", "runs:read"])
    other = services.replay_request(
        run=support_run(finished_demo, "CASE-1002"), reason="other", user=platform_user
    )

    answer = api.post(f"/api/v1/runs/{run.pk}/replay", {"reason": "incident review"}, format="json")

    assert answer.status_code == 202, answer.json()
    body = answer.json()
    assert (body["mode"], body["status"], body["release_id"]) == ("deterministic", "queued", run.release_id)
    services.replay_execute(replay_id=body["id"])  # what the worker does
    detail = api.get(f"/api/v1/replays/{body['id']}").json()
    assert detail["outcome"] == "reproduced" and len(detail["report"]["steps"]) == run.checkpoints.count()
    listed = api.get("/api/v1/replays", {"run": str(run.pk)}).json()
    assert [item["id"] for item in listed["results"]] == [body["id"]] and "report" not in listed["results"][0]
    queued = api.get("/api/v1/replays", {"status": "queued"}).json()["results"]
    assert [item["id"] for item in queued] == [other.pk]


def test_api_refusals_are_problem_details(finished_demo, client_for, platform_user, auditor, requester):
    run = support_run(finished_demo)
    canary = Channel.objects.get(workflow=run.workflow, name="production").release
    platform = client_for(platform_user, scopes=["runs:operate", "runs:read"])
    url = f"/api/v1/runs/{run.pk}/replay"

    cases = [
        (platform.post(url, {}, format="json"), 422, "reason"),
        (platform.post(url, {"reason": "x", "budget": 1}, format="json"), 422, "budget"),
        (platform.post(url, {"reason": "x", "release": "rel_nope"}, format="json"), 404, None),
        (
            client_for(auditor, scopes=["runs:operate"]).post(
                url, {"reason": "x", "release": canary.pk}, format="json"
            ),
            403,
            None,
        ),
        (client_for(requester, scopes=["runs:operate"]).post(url, {"reason": "x"}, format="json"), 403, None),
        (
            client_for(platform_user, scopes=["runs:read"]).post(url, {"reason": "x"}, format="json"),
            403,
            None,
        ),
        (
            platform.post(
                f"/api/v1/releases/{canary.pk}/replay", {"reason": "x", "last_n": 0}, format="json"
            ),
            422,
            None,
        ),
    ]

    for answer, status, field in cases:
        assert answer.status_code == status, answer.content
        assert answer["Content-Type"].startswith("application/problem+json")
        if field:
            assert field in answer.json()["errors"]
    assert not Replay.objects.exists() and not ReplayBatch.objects.exists()


def test_replay_list_and_pages_use_constant_queries(finished_demo, client_for, signed_in, platform_user):
    def replay_some(n: int) -> None:
        for run in finished_demo[:n]:
            services.replay_execute(
                replay_id=services.replay_request(run=run, reason="sample", user=platform_user).pk
            )

    api = client_for(platform_user, scopes=["runs:read"])
    browser = signed_in(platform_user)
    replay_some(2)
    api.get("/api/v1/replays")  # the key's first use is recorded once
    with CaptureQueriesContext(connection) as few_api:
        api.get("/api/v1/replays")
    with CaptureQueriesContext(connection) as few_page:
        browser.get(reverse("replay-console"))
    replay_some(6)
    with CaptureQueriesContext(connection) as many_api:
        assert len(api.get("/api/v1/replays").json()["results"]) == 8
    with CaptureQueriesContext(connection) as many_page:
        assert browser.get(reverse("replay-console")).status_code == 200

    assert len(many_api) == len(few_api)
    assert len(many_page) == len(few_page)


def test_console_pages_by_role(finished_demo, signed_in, platform_user, auditor, reviewer):
    run = support_run(finished_demo, "CASE-1002")
    page = reverse("replay-run", args=[run.pk])

    assert signed_in(reviewer).get(page).status_code == 403
    auditor_browser = signed_in(auditor)
    form = auditor_browser.get(page)
    assert form.status_code == 200 and b"Replay on" in form.content
    refused = auditor_browser.post(page, {"reason": ""})
    assert refused.status_code == 422 and b"This field is required" in refused.content

    answer = auditor_browser.post(page, {"reason": "sample <script>alert(1)</script>"})
    replay = Replay.objects.get()
    assert answer.status_code == 302 and answer["Location"] == reverse("replay-detail", args=[replay.pk])
    services.replay_execute(replay_id=replay.pk)
    shown = auditor_browser.get(answer["Location"])
    assert b"reproduced" in shown.content and b"approve" in shown.content
    assert b"<script>alert(1)</script>" not in shown.content and b"&lt;script&gt;" in shown.content
    run_page = auditor_browser.get(reverse("run-detail", args=[run.pk]))
    assert page.encode() in run_page.content

    batch_form = {"release": run.release_id, "last_n": 5, "reason": "evaluate"}
    assert auditor_browser.post(reverse("replay-batch-create"), batch_form).status_code == 403
    queued = signed_in(platform_user).post(reverse("replay-batch-create"), batch_form)
    batch = ReplayBatch.objects.get()
    assert queued["Location"] == reverse("replay-batch", args=[batch.pk])
    services.replay_batch_execute(batch_id=batch.pk)
    assert b"Agreement" in signed_in(platform_user).get(queued["Location"]).content


@pytest.mark.usefixtures("committed_db")
def test_a_worker_carries_out_a_replay_asked_through_the_api(worker, client_for, platform_user, settings):
    from django.core.management import call_command

    call_command("load_demo", verbosity=0)
    builtin = Run.objects.filter(workflow="builtin.intake").first()
    wait_for(lambda: Run.objects.get(pk=builtin.pk).status == Run.Status.SUCCEEDED, timeout=60)
    api = client_for(platform_user, scopes=["runs:operate", "runs:read"])

    queued = api.post(f"/api/v1/runs/{builtin.pk}/replay", {"reason": "worker check"}, format="json").json()

    wait_for(lambda: Replay.objects.get(pk=queued["id"]).status == Replay.Status.DONE, timeout=60)
    assert api.get(f"/api/v1/replays/{queued['id']}").json()["outcome"] == "reproduced"
