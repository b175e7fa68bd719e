"""Every listing of approval requests keeps its number of queries, and the history's day filter
reads by index."""

from datetime import timedelta
from functools import partial

import pytest
from django.db import connection
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import ApprovalDecision
from runs.models import PendingAction
from tests.factories import RunFactory, UserFactory
from tests.support.query_plans import plans_reading, postgresql_only

from .test_api import READ, handoff

pytestmark = pytest.mark.django_db


def decided(reviewer, n: int) -> None:
    """`n` approved requests, each of another requester's run, approved by `reviewer`."""
    for request in (handoff(UserFactory())[0] for _ in range(n)):
        ApprovalDecision.objects.create(
            pending_action=request,
            reviewer=reviewer,
            decision="approve",
            approver_group="reviewer",
            action_hash=request.action_hash,
        )
        PendingAction.objects.filter(pk=request.pk).update(status="approved", approvals=1, decided_at=Now())


def test_every_listing_of_requests_keeps_its_query_count(client_for, auditor, reviewer):
    clients = {"auditor": client_for(auditor, READ), "reviewer": client_for(reviewer, READ)}
    paths = (
        "/api/v1/approvals",
        "/api/v1/approvals?status=approved",
        "/api/v1/approvals?workflow=builtin.intake",
    )
    for client in clients.values():
        client.get(paths[0])  # the key's first use is recorded once

    def counts() -> dict[tuple[str, str], int]:
        counted = {}
        for who, client in clients.items():
            for path in paths:
                with CaptureQueriesContext(connection) as queries:
                    assert client.get(path).status_code == 200
                counted[who, path] = len(queries)
        return counted

    decided(reviewer, 2)
    few = counts()
    decided(reviewer, 10)
    many = counts()

    assert many == few
    for client in clients.values():
        listed = client.get("/api/v1/approvals?status=approved").json()["results"]
        assert len(listed) == 12 and len({request["requested_by"] for request in listed}) == 12


@postgresql_only
def test_the_history_of_a_day_reads_that_days_decisions_by_index(signed_in, auditor, reviewer):
    decided(reviewer, 3)
    # A long history: the requests decided on the day asked for are a few of them.
    earlier = RunFactory(status="succeeded")
    PendingAction.objects.bulk_create(
        PendingAction(
            run=earlier,
            state="classify",
            status="approved",
            proposed_action={"handoff": "classify"},
            action_hash="a",
            approver_group="reviewer",
            requested_by_id=earlier.requested_by_id,
            decided_at=timezone.now() - timedelta(days=1 + n % 365),
        )
        for n in range(3000)
    )
    today = timezone.localdate().isoformat()
    day = f"/approvals/history/?decided_from={today}&decided_to={today}"

    for user in (auditor, reviewer):
        client = signed_in(user)
        assert client.get(day).content.decode().count("reviewer: approve") == 3
        plans = plans_reading(
            "runs_pendingaction", partial(client.get, day), where='"runs_pendingaction"."decided_at" >='
        )
        assert len(plans) == 1 and "pending_decided_idx" in plans[0], plans
