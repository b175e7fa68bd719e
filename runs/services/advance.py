"""Advancing runs step by step under a lease, and the sweeper that recovers lost ones.

The engine's guarantees come from the database, not from the broker: a run is advanced only
by the worker holding its lease (claimed with a conditional UPDATE), every completed step
is one transaction (checkpoint + next state + audit events), and the sweeper re-enqueues
runs whose lease expired, so a lost message, a duplicate delivery or a dead worker can
neither strand a run nor advance it twice."""

import logging
import time
import uuid

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q, sql
from django.db.models.functions import Now

from controlplane.audit import Entry, record, record_many
from controlplane.canonical import digest
from controlplane.dbtime import database_now, database_now_plus
from controlplane.telemetry import run_span, span

from ..engine import commit_sql
from ..engine.common import WORKER
from ..engine.core import (
    Progress,
    compensation_resume,
    execute_released_step,
    fail_crashed_step,
    progress_of,
)
from ..engine.fanout import sweep_expired_branches
from ..models import Run, StepCheckpoint
from ..workflows import StepContext, workflow_spec
from .queue import enqueue, enqueue_on_commit

logger = logging.getLogger(__name__)

WORKER_ACTOR = WORKER
SWEEPER_ACTOR = "system:sweeper"


def run_advance(*, run_id: str, worker: str) -> None:
    """Execute the run's next steps while this worker holds its lease, one commit per step."""
    # Unique per claim; the worker's name (a hostname can be long) only helps a reader.
    lease_token = f"{worker[:200]}:{uuid.uuid4().hex[:12]}"
    run, checkpoints = _claim_lease(run_id, lease_token)
    if run is None:
        logger.info("run %s is finished or leased to another worker; nothing to do", run_id)
        return
    with run_span(run):
        _advance_leased(run, lease_token, checkpoints)


def _advance_leased(run: Run, lease_token: str, checkpoints: list | None) -> None:
    if run.claims_since_progress > settings.RUN_MAX_CLAIMS:
        _dead_letter_poison(str(run.pk), lease_token)
        return
    if run.status == Run.Status.QUEUED:
        _mark_started(run, lease_token)
    slice_ends = time.monotonic() + settings.RUN_TIME_SLICE_SECONDS
    progress = (
        progress_of(run, now=run.updated_at, completed=checkpoints)
        if run.release_id and run.status == Run.Status.RUNNING
        else None
    )
    while _advance_one(run, lease_token, progress):
        if time.monotonic() > slice_ends:
            _release_to_queue(str(run.pk), lease_token)
            return


def _claim_lease(run_id: str, lease_token: str) -> tuple[Run | None, list | None]:
    """Take the run's lease if it is free or expired and read the run in the same statement
    (starting it, if it is queued): the one read under this lease (its updated_at is the
    database time of the claim). From here the worker keeps the run current itself, and every
    commit checks the lease is still its own. (The run or None; on PostgreSQL, a running run's
    checkpoints as `progress_of` reads them, read by the same statement.)"""
    if connection.vendor == "postgresql":
        with commit_sql.server_binding_cursor() as cursor:
            cursor.execute(commit_sql.CLAIM, [run_id, lease_token, settings.RUN_LEASE_SECONDS])
            row = cursor.fetchone()
        return commit_sql.claimed_run(row) if row else (None, None)
    claimable = Q(lease_owner="") | Q(lease_expires_at__lt=Now())
    claimed = Run.objects.filter(claimable, pk=run_id, status__in=commit_sql.RESUMABLE_STATUSES)
    claim = claimed.query.chain(sql.UpdateQuery)
    claim.add_update_values(
        {
            "lease_owner": lease_token,
            "lease_expires_at": database_now_plus(settings.RUN_LEASE_SECONDS),
            "claims_since_progress": F("claims_since_progress") + 1,
            "updated_at": Now(),
        }
    )
    statement, params = claim.get_compiler(connection=connection).as_sql()
    return next(iter(Run.objects.raw(f"{statement} RETURNING *", params)), None), None


@transaction.atomic
def _dead_letter_poison(run_id: str, lease_token: str) -> None:
    """A run whose step kills its worker every time (a crash, not an error the engine can
    catch) would be re-delivered forever; after RUN_MAX_CLAIMS leases without any commit it is
    dead-lettered instead, for an operator."""
    run = Run.objects.select_for_update().get(pk=run_id)
    if run.lease_owner != lease_token:
        return
    error = f"{run.current_state} stopped its worker {run.claims_since_progress - 1} times without finishing"
    run.status, run.error, run.finished_at, run.updated_at = Run.Status.DEAD_LETTERED, error, Now(), Now()
    run.lease_owner, run.lease_expires_at = "", None
    run.save()
    record(
        WORKER_ACTOR,
        "run.dead_lettered",
        run,
        {"state": run.current_state, "claims": run.claims_since_progress, "error": error},
        trace_id=run.trace_id,
        run_id=run.pk,
        release_id=run.release_id,
    )


def _mark_started(run: Run, lease_token: str) -> None:
    """A queued run's start where the claim does not make it (on PostgreSQL it does)."""
    started = Entry(
        WORKER_ACTOR,
        "run.started",
        run,
        {"state": run.current_state},
        trace_id=run.trace_id,
        run_id=run.pk,
        release_id=run.release_id,
    )
    with transaction.atomic():
        if Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED, lease_owner=lease_token).update(
            status=Run.Status.RUNNING, updated_at=Now()
        ):
            run.status = Run.Status.RUNNING
            record_many([started])


def _advance_one(run: Run, lease_token: str, progress: Progress | None) -> bool:
    """A running released run goes on from what this worker knows; anything else reads afresh."""
    if progress is None:
        return _execute_next_step(str(run.pk), lease_token)
    return _execute_released_step(run, lease_token, progress)


def _execute_released_step(run: Run, lease_token: str, progress: Progress) -> bool:
    try:
        return execute_released_step(run, lease_token, enqueue=enqueue, progress=progress)
    except (OperationalError, InterfaceError):
        raise  # the database went away: the task retries, and the lease keeps the run meanwhile
    except Exception as exc:
        logger.exception("step %s of run %s failed", run.current_state, run.pk)
        return fail_crashed_step(run, lease_token, exc, enqueue)


def _execute_next_step(run_id: str, lease_token: str) -> bool:
    """Run one step and commit its checkpoint; True when the run has more steps to go."""
    run = Run.objects.get(pk=run_id)
    if run.lease_owner != lease_token or run.status not in (Run.Status.RUNNING, Run.Status.COMPENSATING):
        return False
    if run.status == Run.Status.COMPENSATING:
        return compensation_resume(run, lease_token)
    if run.release_id:
        return _execute_released_step(run, lease_token, progress_of(run))
    spec = workflow_spec(run.workflow)
    step = spec.step(run.current_state)
    results = dict(run.checkpoints.values_list("state", "output"))
    context = StepContext(run_id=str(run.pk), case_id=run.case_id, original_input=run.input, results=results)
    started_at = database_now()
    try:
        with span("step", inherited={"step": step.name}):
            output = step.handler(context)
    except Exception as exc:
        logger.exception("step %s of run %s failed", step.name, run_id)
        _fail(run_id, lease_token, step.name, f"{type(exc).__name__}: {exc}")
        return False
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        if run.lease_owner != lease_token:
            return False  # the lease expired meanwhile and another worker owns the run now
        sequence = len(results) + 1
        StepCheckpoint.objects.create(
            run=run, sequence=sequence, state=step.name, output=output, started_at=started_at
        )
        next_state = step.next[0] if step.next else ""
        run.updated_at, run.claims_since_progress = Now(), 0
        if next_state:
            run.current_state = next_state
            run.lease_expires_at = database_now_plus(settings.RUN_LEASE_SECONDS)
        else:
            run.status = Run.Status.SUCCEEDED
            run.finished_at = Now()
            run.lease_owner, run.lease_expires_at = "", None
        run.save(
            update_fields=[
                "claims_since_progress",
                "current_state",
                "status",
                "finished_at",
                "lease_owner",
                "lease_expires_at",
                "updated_at",
            ]
        )
        audit = {"trace_id": run.trace_id, "run_id": run.pk, "release_id": run.release_id}
        record(
            WORKER_ACTOR,
            "run.step.completed",
            run,
            {
                "state": step.name,
                "sequence": sequence,
                "output_digest": digest(output),
                "next_state": next_state or None,
            },
            **audit,
        )
        if not next_state:
            record(WORKER_ACTOR, "run.succeeded", run, {"steps": sequence}, **audit)
    return bool(next_state)


@transaction.atomic
def _fail(run_id: str, lease_token: str, state: str, error: str) -> None:
    run = Run.objects.select_for_update().get(pk=run_id)
    if run.lease_owner != lease_token:
        return
    run.status = Run.Status.FAILED
    run.error = error
    run.finished_at = run.updated_at = Now()
    run.lease_owner, run.lease_expires_at = "", None
    run.save(
        update_fields=["status", "error", "finished_at", "updated_at", "lease_owner", "lease_expires_at"]
    )
    record(
        WORKER_ACTOR,
        "run.failed",
        run,
        {"state": state, "error": error},
        trace_id=run.trace_id,
        run_id=run.pk,
        release_id=run.release_id,
    )


@transaction.atomic
def _release_to_queue(run_id: str, lease_token: str) -> None:
    released = Run.objects.filter(pk=run_id, lease_owner=lease_token, status=Run.Status.RUNNING).update(
        lease_owner="",
        lease_expires_at=database_now_plus(settings.RUN_LEASE_SECONDS),
        updated_at=Now(),
        claims_since_progress=0,
    )
    if released:
        enqueue_on_commit(run_id)


def runs_sweep_expired_leases(*, limit: int = 500) -> int:
    """Re-enqueue active or compensating runs, and map branches, whose lease expired (dead worker
    or lost message); how many were sent again."""
    return _sweep_runs(limit) + sweep_expired_branches(SWEEPER_ACTOR, limit)


def _sweep_runs(limit: int) -> int:
    expired = list(
        Run.objects.filter(status__in=commit_sql.RESUMABLE_STATUSES, lease_expires_at__lt=Now())
        .order_by("lease_expires_at")
        .values_list("pk", flat=True)[:limit]
    )
    requeued = 0
    for run_id in expired:
        with transaction.atomic():
            run = (
                Run.objects.select_for_update()
                .filter(pk=run_id, status__in=commit_sql.RESUMABLE_STATUSES, lease_expires_at__lt=Now())
                .first()
            )
            if run is None:
                continue  # finished or reclaimed since the scan
            previous_owner = run.lease_owner
            run.lease_owner = ""
            run.lease_expires_at = database_now_plus(settings.RUN_LEASE_SECONDS)
            run.save(update_fields=["lease_owner", "lease_expires_at"])
            record(
                SWEEPER_ACTOR,
                "run.lease.expired",
                run,
                {"state": run.current_state, "previous_owner": previous_owner or None},
                trace_id=run.trace_id,
                run_id=run.pk,
                release_id=run.release_id,
            )
            enqueue_on_commit(run.pk)
            requeued += 1
    return requeued
