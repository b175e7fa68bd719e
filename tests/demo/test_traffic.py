"""Demo traffic against a live server and a real worker: the expected mix of outcomes."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from controlplane.identity import actor_for
from controlplane.models import ApiKey, AuditEvent
from demo.services import demo_load
from demo.traffic import MIX
from runs.models import Effect, Run
from runs.services import run_retry
from sandbox import models as sandbox
from tests.support.waiting import wait_for
from tests.support.worker import WorkerProcess


@pytest.fixture
def worker(committed_db, isolated_celery_queue, tmp_path):
    """A real worker that backs off 0.1 s before a retry instead of 2 s, so the catalog's outages
    are quick to meet (the engine reads the backoff from its settings, the worker from its env)."""
    process = WorkerProcess(
        connection.settings_dict,
        queue=isolated_celery_queue,
        log_dir=tmp_path,
        extra_env={"RUN_RETRY_BACKOFF_SECONDS": "0.1"},
    )
    process.start()
    yield process
    process.stop()


def retries(run: Run) -> list[dict]:
    events = AuditEvent.objects.filter(run_id=str(run.pk), action="run.step.retrying").order_by("seq")
    return [event.payload for event in events]


def catalog_effects(batch_id: str):
    return sandbox.Effect.objects.filter(operation="publish_metadata", args__batch_id=batch_id)


@pytest.mark.worker
@pytest.mark.usefixtures("worker")
def test_demo_traffic_drives_the_whole_mix_through_the_api(live_server, capsys):
    demo_load()
    before = Run.objects.count()

    call_command("demo_traffic", rate=20, duration=len(MIX) / 20, url=live_server.url, wait=60)

    output = capsys.readouterr().out
    assert f"{len(MIX)}/{len(MIX)} submitted" in output and f"Submitted {len(MIX)} cases." in output
    outcomes_part, kinds_part = output.split("Outcomes:")[1].split("By kind of case:")
    outcomes, kinds = (
        dict(line.strip().split(": ", 1) for line in part.splitlines() if line.startswith("  "))
        for part in (outcomes_part, kinds_part)
    )
    assert (outcomes["malformed"], outcomes["refused"]) == ("1", "1")
    assert kinds["restricted_data"] == "refused 1" and kinds["malformed"] == "malformed 1"
    assert kinds["clean_batch"] == "succeeded 1" and kinds["schema_change"] == "succeeded 1"
    assert kinds["anomalous_batch"] == "waiting_approval 1" and kinds["large_refund"] == "waiting_approval 1"
    assert kinds["small_refund"] == "waiting_approval 2" and kinds["wants_person"] == "waiting_approval 1"
    assert kinds["missing_batch"] in ("failed 1", "dead_lettered 1")
    assert kinds["catalog_hiccup"] == "succeeded after retry 1" and outcomes["succeeded after retry"] == "1"
    assert kinds["catalog_outage"] == "dead_lettered 1" and "/runs/dead-letters/" in output
    assert Run.objects.count() == before + len(MIX) - 2  # the refused and the malformed never became runs
    assert not ApiKey.objects.filter(name="demo traffic", revoked_at__isnull=True).exists()

    # Refused once, the publication was retried with the same key and took effect once.
    hiccup = Run.objects.get(case_id="orders_daily/2026-11-22")
    assert [(r["state"], r["attempt"], r["delay_s"]) for r in retries(hiccup)] == [("publish", 1, 0.1)]
    assert "publish_metadata is unavailable" in retries(hiccup)[0]["error"]
    published = Effect.objects.get(run=hiccup, state="publish")
    assert (published.status, catalog_effects("2026-11-22").get().idempotency_key) == (
        Effect.Status.COMMITTED,
        published.idempotency_key,
    )
    assert sandbox.CatalogEntry.objects.filter(batch__batch_id="2026-11-22").count() == 1

    # Refused on all three attempts: dead-lettered, nothing published.
    outage = Run.objects.get(case_id="orders_daily/2026-11-23")
    assert (outage.status, outage.current_state, outage.step_attempts) == (
        Run.Status.DEAD_LETTERED,
        "publish",
        3,
    )
    assert [r["attempt"] for r in retries(outage)] == [1, 2]
    assert AuditEvent.objects.filter(run_id=str(outage.pk), action="run.dead_lettered").count() == 1
    assert not catalog_effects("2026-11-23").exists()

    # Retried from the dead-letter queue, it meets the outage's last refusal, then publishes once.
    run_retry(
        run=outage, actor=actor_for(get_user_model().objects.get(username="platform")), reason="catalog back"
    )
    wait_for(lambda: Run.objects.get(pk=outage.pk).status == Run.Status.SUCCEEDED, what="the retried run")
    assert [r["attempt"] for r in retries(outage)] == [1, 2, 1]
    assert catalog_effects("2026-11-23").count() == 1


def test_demo_traffic_needs_the_demo_user(db):
    with pytest.raises(CommandError, match="load_demo"):
        call_command("demo_traffic", user="nobody")


@pytest.mark.parametrize(
    "option",
    [("--rate", "nan"), ("--rate", "inf"), ("--duration", "inf"), ("--rate", "0")],
    ids=["nan-rate", "infinite-rate", "infinite-duration", "zero-rate"],
)
def test_demo_traffic_needs_a_positive_finite_rate_and_duration(db, option):
    with pytest.raises(CommandError, match="positive, finite"):
        call_command("demo_traffic", *option)
    assert not ApiKey.objects.filter(name="demo traffic").exists()
