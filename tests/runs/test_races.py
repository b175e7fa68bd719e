"""Operators' actions on one run made twice, or against each other, at the same moment:
exactly one takes effect and is audited, the other is told the run has moved on (409)."""

from functools import partial

import pytest
from django.db import connection

from controlplane.errors import Conflict
from controlplane.identity import actor_for
from controlplane.models import AuditEvent
from runs.models import Run
from runs.services import run_discard, run_retry
from tests.factories import RunFactory
from tests.integration.races import overlapping, twice

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent connections are what is tested"),
]
OPERATE = ("runs:read", "runs:operate")


@pytest.fixture
def operator(client_for, platform_user):
    """A fresh API client of the platform user for each request (clients are not shared by threads)."""
    return lambda: client_for(platform_user, OPERATE)


def post(client, run: Run, action: str, body: dict):
    return lambda: client.post(f"/api/v1/runs/{run.pk}/{action}", body, format="json")


def audited(run: Run) -> list[str]:
    return list(
        AuditEvent.objects.filter(
            run_id=str(run.pk), action__in=["run.retried", "run.cancelled"]
        ).values_list("action", flat=True)
    )


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_a_double_post_acts_once(operator, action):
    run = RunFactory(status="dead_lettered", current_state="retrieve", error="timed out")
    responses = twice(post(operator(), run, action, {"reason": "again"}))
    assert sorted(response.status_code for response in responses) == [200, 409], responses
    assert audited(run) == [f"run.{'retried' if action == 'retry' else 'cancelled'}"]
    assert Run.objects.count() == 1  # a retry re-injects the run itself, never a copy


def test_two_retries_of_a_dead_letter_at_once_retry_it_once(operator):
    run = RunFactory(status="dead_lettered", current_state="retrieve", error="timed out")
    first, second = overlapping(
        post(operator(), run, "retry", {"repaired_input": {"text": "fixed"}}),
        post(operator(), run, "retry", {"repaired_input": {"text": "fixed again"}}),
    )
    assert (first.status_code, second.status_code) == (200, 409)
    assert "this one is queued" in second.json()["detail"]
    run.refresh_from_db()
    assert run.input == {"text": "fixed"} and run.status == Run.Status.QUEUED
    assert audited(run) == ["run.retried"]


@pytest.mark.parametrize("discard_first", [True, False])
def test_discard_and_retry_of_a_dead_letter_at_once_do_one_or_the_other(platform_user, discard_first):
    run = RunFactory(status="dead_lettered", current_state="retrieve", error="timed out")
    actor = actor_for(platform_user)
    discard = partial(run_discard, run=run, actor=actor, reason="not worth it")
    retry = partial(run_retry, run=run, actor=actor)
    first, second = overlapping(discard, retry) if discard_first else overlapping(retry, discard)
    assert isinstance(first, Run) and isinstance(second, Conflict), (first, second)
    run.refresh_from_db()
    if discard_first:
        assert run.status == Run.Status.CANCELLED and "this one is cancelled" in second.detail
        assert audited(run) == ["run.cancelled"]
    else:  # the retry is not undone by a discard meant for the dead letter it no longer is
        assert run.status == Run.Status.QUEUED and "left the dead-letter queue" in second.detail
        assert audited(run) == ["run.retried"]
