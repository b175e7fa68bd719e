"""Run reads: a constant number of queries however long the story, and an index under each filter."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.audit import record
from runs.models import Run
from tests.factories import RunFactory
from tests.support.query_plans import plans_reading, postgresql_only

pytestmark = pytest.mark.django_db


def test_a_runs_events_keep_their_query_count(platform_user, client_for):
    client = client_for(platform_user, scopes=["runs:read"])
    run = RunFactory()
    path = f"/api/v1/runs/{run.pk}/events"
    client.get(path)  # the key's first use is recorded once

    def events() -> tuple[int, list[dict]]:
        with CaptureQueriesContext(connection) as queries:
            listed = client.get(path).json()
        return len(queries), listed

    record("system:worker", "run.started", run, {"state": "classify"}, run_id=run.pk)
    few, _ = events()
    for sequence in range(1, 21):
        record("system:worker", "run.step.completed", run, {"sequence": sequence}, run_id=run.pk)
    many, listed = events()

    assert [event["action"] for event in listed] == ["run.started", *["run.step.completed"] * 20]
    assert many == few


@postgresql_only
def test_the_runs_of_a_case_are_found_by_index(platform_user, client_for):
    client = client_for(platform_user, scopes=["runs:read"])
    wanted = RunFactory(case_id="CASE-LOOKED-UP")
    Run.objects.bulk_create(RunFactory.build_batch(3000, requested_by=platform_user))

    found = client.get("/api/v1/runs?case_id=CASE-LOOKED-UP").json()["results"]
    plans = plans_reading("runs_run", lambda: client.get("/api/v1/runs?case_id=CASE-LOOKED-UP"))

    assert [run["id"] for run in found] == [str(wanted.pk)]
    assert all("run_case_created_idx" in plan for plan in plans), plans


@postgresql_only
def test_the_runs_of_a_whole_release_id_are_found_by_index(signed_in, platform_user):
    client = signed_in(platform_user)
    wanted = RunFactory(release_id="rel_0123456789abcdef", case_id="CASE-OF-THE-RELEASE")
    others = RunFactory.build_batch(3000, requested_by=platform_user, release_id="rel_fedcba9876543210")
    Run.objects.bulk_create(others)

    for typed in ("rel_0123456789abcdef", "0123456789ABCDEF", "rel_0123"):  # whole, no rel_, a prefix
        assert wanted.case_id in client.get(f"/runs/?release={typed}").content.decode(), typed
    whole = "/runs/?release=rel_0123456789abcdef"
    plans = plans_reading("runs_run", lambda: client.get(whole), where="release_id")

    assert all("run_release_created_idx" in plan for plan in plans), plans
