"""Replays: asked for (audited: who, why), carried out by a worker, their outcome audited.

A deterministic replay runs a finished run again on its own release from what it recorded; a
what-if replay runs it on another release of the same workflow in shadow mode; a batch replays
a release against the last N finished runs of its workflow and attaches the summary to the
release as evaluation evidence (suite `replay`) for its promotion gate. A sweeper sends again
what was queued but never delivered, and fails what a stopped worker left running.
"""

import logging
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Now

from controlplane import broker
from controlplane.audit import record
from controlplane.dbtime import database_now_plus
from controlplane.errors import Conflict, Forbidden, InvalidInput
from controlplane.identity import ADMIN, AUDITOR, PLATFORM, actor_for, has_role
from controlplane.models import ApiKey
from registry.models import Release
from registry.services.releases import release_record_evaluation
from runs.engine.released import released_workflow
from runs.models import Run

from .engine import INCOMPLETE, REPRODUCED, replay_builtin, replay_released
from .models import Replay, ReplayBatch
from .recording import recording_of

logger = logging.getLogger(__name__)
REASON_MAX = 2000
SCOPE = "runs:operate"
SHADOW_ACTOR = "system:shadow"
SWEEPER_ACTOR = "system:sweeper"
# Sending a replay again is harmless (only one delivery can claim it), so a message is taken
# for lost early; one merely waiting behind a long queue is sent again at most this often.
REQUEUE_AFTER_SECONDS = 600
SENT_AGAIN_IF_LOST = f"the sweeper sends it again after {REQUEUE_AFTER_SECONDS} s"
# Not finished: their recording is not final, so a replay would compare against half a run (one
# waiting for a reviewer would be "reproduced" up to a decision it never had).
NOT_REPLAYABLE = (Run.Status.QUEUED, Run.Status.RUNNING, Run.Status.WAITING_APPROVAL, Run.Status.COMPENSATING)


def replay_request(
    *,
    run: Run,
    reason: str,
    user: AbstractBaseUser,
    release: Release | None = None,
    api_key: ApiKey | None = None,
) -> Replay:
    """Ask for a replay of `run`: on its own release (deterministic), or on `release` (what-if).

    Auditors may replay deterministically; what-if replays are for platform and admin users.
    Raises InvalidInput, Forbidden, Conflict."""
    reason = _checked_reason(reason)
    what_if = release is not None and release.pk != run.release_id
    _check_rights(user, api_key, what_if=what_if)
    if run.status in NOT_REPLAYABLE:
        raise Conflict(f"A {run.status} run has not finished; replay it once it has stopped.")
    if release is not None and not run.release_id:
        raise InvalidInput(
            "A built-in workflow has no releases: it can only be replayed on its own code.",
            errors={"release": ["Not for built-in workflows."]},
        )
    if release is not None and release.workflow != run.workflow:
        raise InvalidInput(
            f"Release {release.pk} is of workflow {release.workflow}, not {run.workflow}.",
            errors={"release": ["Another workflow's release."]},
        )
    with transaction.atomic():
        replay = Replay.objects.create(
            run=run,
            release_id=release.pk if release is not None else run.release_id,
            mode=Replay.Mode.WHAT_IF if what_if else Replay.Mode.DETERMINISTIC,
            reason=reason,
            requested_by=user,
        )
        _audit_requested(actor_for(user, api_key), replay)
        _enqueue_on_commit(replay.pk)
    return replay


def replay_shadow(*, run: Run) -> Replay:
    """A run of a channel in shadow mode finished: replay it on the shadow release."""
    with transaction.atomic():
        replay = Replay.objects.create(
            run=run,
            release_id=run.shadow_release_id,
            mode=Replay.Mode.WHAT_IF,
            reason=f"shadow rollout of {run.shadow_release_id} on channel {run.channel}",
            shadow=True,
        )
        _audit_requested(SHADOW_ACTOR, replay)
        _enqueue_on_commit(replay.pk)
    return replay


def replay_shadow_runs(*, limit: int = 200) -> int:
    """Replay the finished runs of shadow rollouts that have no shadow replay yet."""
    runs = (
        Run.objects.filter(status__in=Run.FINISHED_STATUSES)
        .exclude(shadow_release_id="")
        .exclude(replays__shadow=True)
        .order_by("finished_at")[:limit]
    )
    started = 0
    for run in runs:
        try:
            replay_shadow(run=run)
        except IntegrityError:
            continue  # an overlapping tick made this run's shadow replay first
        started += 1
    return started


def replay_execute(*, replay_id: int) -> Replay:
    """Carry out a replay (in a worker) and record what it found; nothing else is written."""
    # Claimed by one conditional update: of two deliveries of the task, only one replays.
    claimed = Replay.objects.filter(pk=replay_id, status=Replay.Status.QUEUED).update(
        status=Replay.Status.RUNNING, started_at=Now()
    )
    replay = Replay.objects.select_related("run", "requested_by").get(pk=replay_id)
    if not claimed:
        return replay  # a repeated delivery of the task
    try:
        report = replay_report(replay.run, replay.release_id, ask_models=replay.mode == Replay.Mode.WHAT_IF)
    except Exception as error:
        logger.exception("replay %s of run %s failed", replay.pk, replay.run_id)
        _finish(replay, status=Replay.Status.FAILED, error=f"{type(error).__name__}: {error}"[:500])
        return replay
    _finish(
        replay,
        status=Replay.Status.DONE,
        outcome=report["outcome"],
        first_difference=report["first_difference"],
        report=report,
    )
    return replay


def replay_report(run: Run, release_id: str, *, ask_models: bool) -> dict:
    recording = recording_of(run)
    if not run.release_id:
        return replay_builtin(recording).as_dict()
    report = replay_released(
        recording,
        released_workflow(release_id),
        released_workflow(run.release_id),
        ask_models=ask_models,
    )
    return report.as_dict()


@transaction.atomic
def _finish(replay: Replay, *, status: str, actor: Any | None = None, **fields: Any) -> bool:
    """End a running replay, by default in the name of whoever asked for it. False when it has
    ended already: the sweeper failed it, taking its worker for stopped, and this is the late
    result of a worker that was only slow."""
    if not Replay.objects.filter(pk=replay.pk, status=Replay.Status.RUNNING).update(status=status):
        replay.refresh_from_db()
        return False
    for name, value in {"status": status, **fields}.items():
        setattr(replay, name, value)
    replay.finished_at = Now()
    replay.save()
    report = fields.get("report", {})
    record(
        actor or _actor_of(replay.requested_by),
        "run.replayed" if status == Replay.Status.DONE else "run.replay_failed",
        replay.run,
        {
            "replay": replay.pk,
            "mode": replay.mode,
            "release_id": replay.release_id,
            "outcome": replay.outcome,
            "first_difference": replay.first_difference,
            "changed_decisions": report.get("changed_decisions", 0),
            "cost_delta_usd": report.get("cost_delta_usd", 0),
            "error": replay.error,
        },
        trace_id=replay.run.trace_id,
        run_id=replay.run_id,
        release_id=replay.release_id,
    )
    replay.refresh_from_db(fields=["finished_at"])
    return True


def replay_batch_request(
    *,
    release: Release,
    last_n: int,
    reason: str,
    user: AbstractBaseUser,
    api_key: ApiKey | None = None,
) -> ReplayBatch:
    """Ask for `release` to be replayed against the last `last_n` finished runs of its workflow."""
    reason = _checked_reason(reason)
    _check_rights(user, api_key, what_if=True)
    if not 1 <= last_n <= settings.REPLAY_BATCH_MAX_RUNS:
        raise InvalidInput(
            f"A batch replays between 1 and {settings.REPLAY_BATCH_MAX_RUNS} runs.",
            errors={"last_n": [f"Between 1 and {settings.REPLAY_BATCH_MAX_RUNS}."]},
        )
    with transaction.atomic():
        batch = ReplayBatch.objects.create(
            release=release, workflow=release.workflow, last_n=last_n, reason=reason, requested_by=user
        )
        record(
            actor_for(user, api_key),
            "release.replay_requested",
            release,
            {"batch": batch.pk, "last_n": last_n, "reason": reason},
            release_id=release.pk,
        )
        _enqueue_batch_on_commit(batch.pk)
    return batch


def replay_batch_execute(*, batch_id: int) -> ReplayBatch:
    """Replay the batch's runs one after another, keeping its progress current, then attach
    the summary to the release as the `replay` evaluation."""
    claimed = ReplayBatch.objects.filter(pk=batch_id, status=ReplayBatch.Status.QUEUED).update(
        status=ReplayBatch.Status.RUNNING, started_at=Now()
    )
    batch = ReplayBatch.objects.select_related("release", "requested_by").get(pk=batch_id)
    if not claimed:
        return batch  # a repeated delivery of the task: one set of replays per batch
    runs = list(
        Run.objects.filter(workflow=batch.workflow, status__in=Run.FINISHED_STATUSES)
        .exclude(release_id="")
        .order_by("-created_at", "-pk")[: batch.last_n]
    )
    batch.total = len(runs)
    batch.save(update_fields=["total"])
    reports = []
    for done, run in enumerate(runs, start=1):
        replay = Replay.objects.create(
            run=run,
            release_id=batch.release_id,
            mode=Replay.Mode.DETERMINISTIC if run.release_id == batch.release_id else Replay.Mode.WHAT_IF,
            reason=f"batch {batch.pk}: {batch.reason}",
            batch=batch,
            requested_by=batch.requested_by,
        )
        reports.append(replay_execute(replay_id=replay.pk).report)
        batch.done = done
        # The batch page polls it. A batch the sweeper failed meanwhile stops: its worker was slow.
        if not ReplayBatch.objects.filter(pk=batch.pk, status=ReplayBatch.Status.RUNNING).update(done=done):
            batch.refresh_from_db()
            return batch
    return _finish_batch(batch, batch_summary(reports))


def batch_summary(reports: list[dict]) -> dict:
    """How a release would have done on recorded runs: outcomes kept or changed, decisions
    changed, cost; `agreement` is the share of fully replayed runs that end as they did."""
    complete = [r for r in reports if r and r["outcome"] != INCOMPLETE]
    same_end = [r for r in complete if r["end"] == r["original_end"]]
    original_cost = sum(r["original_cost_usd"] for r in complete)
    replayed_cost = sum(r["replayed_cost_usd"] for r in complete)
    return {
        "runs": len(reports),
        "reproduced": sum(1 for r in complete if r["outcome"] == REPRODUCED),
        "diverged": len(complete) - sum(1 for r in complete if r["outcome"] == REPRODUCED),
        "incomplete": len(reports) - len(complete),
        "failed": sum(1 for r in reports if not r),
        "changed_outcomes": len(complete) - len(same_end),
        "changed_decisions": sum(r["changed_decisions"] for r in complete),
        "original_cost_usd": round(original_cost, 6),
        "replayed_cost_usd": round(replayed_cost, 6),
        "cost_delta_usd": round(replayed_cost - original_cost, 6),
        "agreement": round(len(same_end) / len(complete), 4) if complete else 0.0,
    }


@transaction.atomic
def _finish_batch(batch: ReplayBatch, summary: dict) -> ReplayBatch:
    # Conditional, as for a replay: a batch the sweeper failed meanwhile keeps its failure.
    if not ReplayBatch.objects.filter(pk=batch.pk, status=ReplayBatch.Status.RUNNING).update(
        status=ReplayBatch.Status.DONE
    ):
        batch.refresh_from_db()
        return batch
    user = batch.requested_by
    actor = _actor_of(user)
    batch.summary, batch.status, batch.finished_at = summary, ReplayBatch.Status.DONE, Now()
    if summary["runs"] - summary["incomplete"] - summary["failed"] > 0:
        batch.evaluation = release_record_evaluation(
            release=batch.release,
            suite="replay",
            score=Decimal(str(summary["agreement"])),
            details={"batch": batch.pk, **summary},
            recorded_by=user,
            actor=actor,
        )
    batch.save()
    record(
        actor, "release.replayed", batch.release, {"batch": batch.pk, **summary}, release_id=batch.release_id
    )
    batch.refresh_from_db(fields=["finished_at"])
    return batch


def replay_batch_failed(batch_id: int, error: Exception) -> None:
    """The batch's worker raised `error`."""
    _fail_batch(
        batch_id, Q(status=ReplayBatch.Status.RUNNING), error=f"{type(error).__name__}: {error}"[:500]
    )


def replays_sweep_stalled(*, limit: int = 500) -> int:
    """Send again the replays and batches still queued long after they were sent (their message
    was lost), and fail those running with no sign of their worker for REPLAY_STALE_SECONDS (it
    stopped); how many it acted on. Each is a conditional update: overlapping sweeps act once."""
    # Replays and batches share these fields and statuses.
    lost = Q(status=Replay.Status.QUEUED, enqueued_at__lt=database_now_plus(-REQUEUE_AFTER_SECONDS))
    stale_start = database_now_plus(-settings.REPLAY_STALE_SECONDS)
    stalled = Q(status=Replay.Status.RUNNING, started_at__lt=stale_start)
    # A batch shows its worker alive by starting its replays one after another, however long it runs.
    stalled_batch = stalled & ~Q(
        Exists(Replay.objects.filter(batch=OuterRef("pk"), started_at__gte=stale_start))
    )
    stopped = (
        f"The worker stopped while it was running (no sign of it for {settings.REPLAY_STALE_SECONDS} s)."
    )
    acted = 0
    for replay_id in Replay.objects.filter(lost).values_list("pk", flat=True)[:limit]:
        acted += _replay_requeue(replay_id, lost)
    for batch_id in ReplayBatch.objects.filter(lost).values_list("pk", flat=True)[:limit]:
        acted += _batch_requeue(batch_id, lost)
    for replay in Replay.objects.filter(stalled).select_related("run", "requested_by")[:limit]:
        acted += _finish(replay, status=Replay.Status.FAILED, actor=SWEEPER_ACTOR, error=stopped)
    for batch_id in ReplayBatch.objects.filter(stalled_batch).values_list("pk", flat=True)[:limit]:
        acted += _fail_batch(batch_id, stalled_batch, error=stopped, actor=SWEEPER_ACTOR)
    return acted


@transaction.atomic
def _replay_requeue(replay_id: int, lost: Q) -> bool:
    if not Replay.objects.filter(lost, pk=replay_id).update(enqueued_at=Now()):
        return False  # claimed, or sent again by an overlapping sweep, since the scan
    replay = Replay.objects.select_related("run").get(pk=replay_id)
    record(
        SWEEPER_ACTOR,
        "run.replay_requeued",
        replay.run,
        {"replay": replay.pk},
        trace_id=replay.run.trace_id,
        run_id=replay.run_id,
        release_id=replay.release_id,
    )
    _enqueue_on_commit(replay_id)
    return True


@transaction.atomic
def _batch_requeue(batch_id: int, lost: Q) -> bool:
    if not ReplayBatch.objects.filter(lost, pk=batch_id).update(enqueued_at=Now()):
        return False  # claimed, or sent again by an overlapping sweep, since the scan
    batch = ReplayBatch.objects.select_related("release").get(pk=batch_id)
    record(
        SWEEPER_ACTOR,
        "release.replay_requeued",
        batch.release,
        {"batch": batch.pk},
        release_id=batch.release_id,
    )
    _enqueue_batch_on_commit(batch_id)
    return True


@transaction.atomic
def _fail_batch(batch_id: int, found: Q, *, error: str, actor: Any | None = None) -> bool:
    """Fail the batch if it is still as its worker (running) or the sweeper (stalled) found it:
    whichever of them fails it first, the other does nothing."""
    failed = ReplayBatch.objects.filter(found, pk=batch_id).update(
        status=ReplayBatch.Status.FAILED, error=error, finished_at=Now()
    )
    if not failed:
        return False
    batch = ReplayBatch.objects.select_related("release", "requested_by").get(pk=batch_id)
    record(
        actor or _actor_of(batch.requested_by),
        "release.replay_failed",
        batch.release,
        {"batch": batch.pk, "done": batch.done, "total": batch.total, "error": error},
        release_id=batch.release_id,
    )
    return True


def _checked_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Say why you replay: the reason is audited.", errors={"reason": ["Required."]})
    if len(reason) > REASON_MAX:
        raise InvalidInput(f"The reason is over {REASON_MAX} characters.", errors={"reason": ["Too long."]})
    return reason


def _check_rights(user: AbstractBaseUser, api_key: ApiKey | None, *, what_if: bool) -> None:
    roles = (PLATFORM, ADMIN) if what_if else (PLATFORM, ADMIN, AUDITOR)
    if not has_role(user, *roles):
        kind = "A what-if replay" if what_if else "A replay"
        raise Forbidden(f"{kind} needs one of the roles: {', '.join(roles)}.")
    if api_key is not None and SCOPE not in api_key.scopes:
        raise Forbidden(f"This API key lacks the scope '{SCOPE}'.")


def _audit_requested(actor: Any, replay: Replay) -> None:
    record(
        actor,
        "run.replay_requested",
        replay.run,
        {"replay": replay.pk, "mode": replay.mode, "release_id": replay.release_id, "reason": replay.reason},
        trace_id=replay.run.trace_id,
        run_id=replay.run_id,
        release_id=replay.release_id,
    )


def _actor_of(user: AbstractBaseUser | None) -> Any:
    return actor_for(user) if user is not None else SHADOW_ACTOR


def _enqueue_on_commit(replay_id: int) -> None:
    from .tasks import execute_replay

    broker.send_on_commit(execute_replay, replay_id, if_lost=SENT_AGAIN_IF_LOST)


def _enqueue_batch_on_commit(batch_id: int) -> None:
    from .tasks import execute_replay_batch

    broker.send_on_commit(execute_replay_batch, batch_id, if_lost=SENT_AGAIN_IF_LOST)
