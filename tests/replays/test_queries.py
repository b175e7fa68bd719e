"""The replay console's lists keep their number of queries however many replays and batches."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from registry.models import Release
from replays.models import Replay, ReplayBatch
from tests.factories import RunFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_the_console_a_runs_replays_and_a_batch_keep_their_query_count(
    demo_registry, signed_in, platform_user
):
    release = Release.objects.get(pk=demo_registry.releases[0])
    run = RunFactory(release_id=release.pk, workflow=release.workflow, status="succeeded")
    batch = ReplayBatch.objects.create(
        release=release,
        workflow=release.workflow,
        last_n=50,
        reason="before promoting",
        requested_by=platform_user,
    )
    client = signed_in(platform_user)
    pages = (
        reverse("replay-console"),
        reverse("replay-run", args=[run.pk]),
        reverse("replay-batch", args=[batch.pk]),
    )

    def replayed(n: int) -> None:
        """`n` more replays of the run, of other runs in the batch, of shadow rollouts (asked by
        nobody), and batches, each asked by someone else."""
        for _ in range(n):
            for replayed_run, in_batch in ((run, None), (RunFactory(workflow=release.workflow), batch)):
                Replay.objects.create(
                    run=replayed_run,
                    mode="deterministic",
                    reason="sample",
                    batch=in_batch,
                    requested_by=UserFactory(),
                )
            Replay.objects.create(run=RunFactory(), mode="what_if", reason="shadow rollout", shadow=True)
            ReplayBatch.objects.create(
                release=release,
                workflow=release.workflow,
                last_n=5,
                reason="again",
                requested_by=UserFactory(),
            )

    def counts() -> list[int]:
        counted = []
        for page in pages:
            with CaptureQueriesContext(connection) as queries:
                assert client.get(page).status_code == 200, page
            counted.append(len(queries))
        return counted

    replayed(1)
    few = counts()
    replayed(8)
    many = counts()

    assert many == few
    rows = [re.findall(r'<a href="/replays/\d+">', client.get(page).content.decode()) for page in pages]
    assert [len(found) for found in rows] == [25, 9, 9]  # the console shows the 25 newest
