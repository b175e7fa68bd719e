"""The replay sweeper: replays and batches whose message was lost are sent again; those whose
worker stopped are failed, audited, and shown failed; a worker that was only slow keeps the
failure; overlapping sweeps act once."""

from collections.abc import Callable

import pytest
from django.conf import settings
from django.urls import reverse

from controlplane.celery import app as celery_app
from controlplane.dbtime import database_now_plus
from controlplane.models import AuditEvent
from registry.models import Release
from replays import services, tasks
from replays.models import Replay, ReplayBatch
from runs.models import Run

pytestmark = pytest.mark.django_db

STOPPED = "The worker stopped while it was running"


class WorkerStopped(BaseException):
    """The worker process died mid-replay: not even its `except Exception` runs."""


@pytest.fixture
def tasks_in_process():
    """Tasks sent on commit run at once, in process (the worker path is tested elsewhere)."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def asked(run: Run, user) -> Replay:
    # In a test's transaction the enqueue on commit never happens: the message is lost.
    return services.replay_request(run=run, reason="incident review", user=user)


def asked_batch(run: Run, user) -> ReplayBatch:
    release = Release.objects.get(pk=run.release_id)
    return services.replay_batch_request(release=release, last_n=5, reason="evaluate", user=user)


def left_running(monkeypatch, execute: Callable[[], object]) -> None:
    """`execute` claims its replay or batch, then its worker stops."""

    def stop(*args, **kwargs):
        raise WorkerStopped

    with monkeypatch.context() as patched, pytest.raises(WorkerStopped):
        patched.setattr(services, "replay_report", stop)
        execute()


def sent_long_ago(*rows: Replay | ReplayBatch) -> None:
    for row in rows:
        seconds = services.REQUEUE_AFTER_SECONDS + 1
        type(row).objects.filter(pk=row.pk).update(enqueued_at=database_now_plus(-seconds))


def started_long_ago(*rows: Replay | ReplayBatch) -> None:
    for row in rows:
        seconds = settings.REPLAY_STALE_SECONDS + 1
        type(row).objects.filter(pk=row.pk).update(started_at=database_now_plus(-seconds))


def stalled_replay(run: Run, user, monkeypatch) -> Replay:
    replay = asked(run, user)
    left_running(monkeypatch, lambda: services.replay_execute(replay_id=replay.pk))
    started_long_ago(replay)
    return replay


def stalled_batch(run: Run, user, monkeypatch) -> ReplayBatch:
    batch = asked_batch(run, user)
    left_running(monkeypatch, lambda: services.replay_batch_execute(batch_id=batch.pk))
    started_long_ago(batch, *batch.replays.all())
    return batch


def events(action: str, actor: str = services.SWEEPER_ACTOR) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, actor=actor))


def test_the_beat_sweeps_replays_every_interval():
    entry = settings.CELERY_BEAT_SCHEDULE["sweep-stalled-replays"]
    assert entry == {
        "task": tasks.sweep_stalled_replays.name,
        "schedule": settings.REPLAY_SWEEP_INTERVAL_SECONDS,
    }


def test_a_lost_replay_and_batch_are_sent_again_and_carried_out(
    recorded_run, platform_user, tasks_in_process, django_capture_on_commit_callbacks
):
    replay, batch = asked(recorded_run, platform_user), asked_batch(recorded_run, platform_user)
    assert services.replays_sweep_stalled() == 0  # just sent: maybe waiting behind a long queue
    sent_long_ago(replay, batch)

    with django_capture_on_commit_callbacks(execute=True):
        assert services.replays_sweep_stalled() == 2

    replay.refresh_from_db()
    batch.refresh_from_db()
    assert (replay.status, replay.outcome) == (Replay.Status.DONE, "reproduced")
    assert replay.started_at is not None and replay.started_at <= replay.finished_at
    assert (batch.status, batch.done) == (ReplayBatch.Status.DONE, 1)
    assert batch.started_at is not None and batch.evaluation is not None
    [requeued] = events("run.replay_requeued")
    assert (requeued.run_id, requeued.payload) == (str(recorded_run.pk), {"replay": replay.pk})
    [batch_requeued] = events("release.replay_requeued")
    assert (batch_requeued.object_id, batch_requeued.payload) == (batch.release_id, {"batch": batch.pk})


def test_a_replay_and_a_batch_left_running_by_a_stopped_worker_fail(
    recorded_run, platform_user, monkeypatch, signed_in
):
    replay = stalled_replay(recorded_run, platform_user, monkeypatch)
    batch = stalled_batch(recorded_run, platform_user, monkeypatch)

    assert services.replays_sweep_stalled() == 3  # the replay, the batch and the batch's replay

    for row in (replay, batch, *batch.replays.all()):
        row.refresh_from_db()
        assert row.status == "failed" and row.error.startswith(STOPPED)
        assert row.finished_at is not None
    failed = events("run.replay_failed")
    assert sorted(event.payload["replay"] for event in failed) == sorted(
        [replay.pk, *batch.replays.values_list("pk", flat=True)]
    )
    assert all(event.payload["error"].startswith(STOPPED) for event in failed)
    [batch_failed] = events("release.replay_failed")
    assert batch_failed.object_id == batch.release_id
    assert batch_failed.payload["batch"] == batch.pk and batch_failed.payload["error"] == batch.error
    browser = signed_in(platform_user)
    for page in (reverse("replay-detail", args=[replay.pk]), reverse("replay-batch", args=[batch.pk])):
        shown = browser.get(page).content.decode()
        assert "status-failed" in shown and STOPPED in shown
        assert f'hx-get="{page}"' not in shown  # no longer polls as if still running


def test_replays_and_batches_still_within_the_limit_are_left_alone(recorded_run, platform_user, monkeypatch):
    replay = asked(recorded_run, platform_user)
    left_running(monkeypatch, lambda: services.replay_execute(replay_id=replay.pk))
    batch = asked_batch(recorded_run, platform_user)
    left_running(monkeypatch, lambda: services.replay_batch_execute(batch_id=batch.pk))
    started_long_ago(batch)  # a long batch, but its latest replay started recently

    assert services.replays_sweep_stalled() == 0

    assert Replay.objects.filter(status=Replay.Status.RUNNING).count() == 2
    assert ReplayBatch.objects.get().status == ReplayBatch.Status.RUNNING
    assert not AuditEvent.objects.filter(actor=services.SWEEPER_ACTOR).exists()


def test_a_slow_worker_finishing_after_the_sweep_keeps_the_failure(recorded_run, platform_user, monkeypatch):
    real_report = services.replay_report
    sweeps = []

    def slow_report(*args, **kwargs) -> dict:
        started_long_ago(*Replay.objects.all(), *ReplayBatch.objects.all())
        sweeps.append(services.replays_sweep_stalled())  # while the worker is still replaying
        return real_report(*args, **kwargs)

    monkeypatch.setattr(services, "replay_report", slow_report)
    replay = services.replay_execute(replay_id=asked(recorded_run, platform_user).pk)
    batch = services.replay_batch_execute(batch_id=asked_batch(recorded_run, platform_user).pk)
    services.replay_batch_failed(batch.pk, RuntimeError("late"))  # the slow worker's error, also late

    assert sweeps == [1, 2]
    replay.refresh_from_db()
    batch.refresh_from_db()
    assert (replay.status, replay.outcome, replay.report) == (Replay.Status.FAILED, "", {})
    assert replay.error.startswith(STOPPED)
    assert (batch.status, batch.done, batch.evaluation) == (ReplayBatch.Status.FAILED, 0, None)
    assert batch.error.startswith(STOPPED) and batch.replays.get().status == Replay.Status.FAILED
    assert not AuditEvent.objects.filter(action__in=["run.replayed", "release.replayed"]).exists()
    assert AuditEvent.objects.filter(action="release.replay_failed").count() == 1


def test_a_batch_failed_while_its_slow_worker_sums_up_stays_failed(recorded_run, platform_user, monkeypatch):
    real_summary = services.batch_summary

    def slow_summary(reports: list[dict]) -> dict:
        started_long_ago(*Replay.objects.all(), *ReplayBatch.objects.all())
        assert services.replays_sweep_stalled() == 1  # the batch; its replay is done
        return real_summary(reports)

    monkeypatch.setattr(services, "batch_summary", slow_summary)
    batch = services.replay_batch_execute(batch_id=asked_batch(recorded_run, platform_user).pk)

    assert (batch.status, batch.summary, batch.evaluation) == (ReplayBatch.Status.FAILED, {}, None)
    assert batch.error.startswith(STOPPED) and batch.replays.get().status == Replay.Status.DONE
    assert not AuditEvent.objects.filter(action="release.replayed").exists()


def test_two_sweeps_in_a_row_act_once(recorded_run, platform_user, monkeypatch):
    sent_long_ago(asked(recorded_run, platform_user), asked_batch(recorded_run, platform_user))
    stalled_replay(recorded_run, platform_user, monkeypatch)
    stalled_batch(recorded_run, platform_user, monkeypatch)

    assert tasks.sweep_stalled_replays() == 5
    assert tasks.sweep_stalled_replays() == 0

    actions = AuditEvent.objects.filter(actor=services.SWEEPER_ACTOR).values_list("action", flat=True)
    assert sorted(actions) == [
        "release.replay_failed",
        "release.replay_requeued",
        "run.replay_failed",
        "run.replay_failed",
        "run.replay_requeued",
    ]


@pytest.mark.parametrize(
    ("step", "make", "changes"),
    [
        ("_replay_requeue", lambda run, user, monkeypatch: sent_long_ago(asked(run, user)), 1),
        ("_batch_requeue", lambda run, user, monkeypatch: sent_long_ago(asked_batch(run, user)), 1),
        ("_finish", stalled_replay, 1),
        ("_fail_batch", stalled_batch, 2),  # the batch and its replay
    ],
)
def test_a_sweep_overlapping_another_acts_once(recorded_run, platform_user, monkeypatch, step, make, changes):
    make(recorded_run, platform_user, monkeypatch)
    real_step = getattr(services, step)
    other_sweep = []

    def overlapped(*args, **kwargs):
        if not other_sweep:  # the next sweep runs in full between this one's scan and its update
            other_sweep.append(None)
            other_sweep[0] = services.replays_sweep_stalled()
        return real_step(*args, **kwargs)

    monkeypatch.setattr(services, step, overlapped)

    acted = services.replays_sweep_stalled()

    assert acted + other_sweep[0] == changes
    assert AuditEvent.objects.filter(actor=services.SWEEPER_ACTOR).count() == changes
