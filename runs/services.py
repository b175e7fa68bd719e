"""Run use cases: submitting tasks and advancing runs step by step.

The engine's guarantees come from the database, not from the broker: a run is advanced only
by the worker holding its lease (claimed with a conditional UPDATE), every completed step
is one transaction (checkpoint + next state + audit events), and the sweeper re-enqueues
runs whose lease expired, so a lost message, a duplicate delivery or a dead worker can
neither strand a run nor advance it twice.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Now

from controlplane.audit import record
from controlplane.canonical import digest
from controlplane.dbtime import database_now, database_now_plus
from controlplane.errors import Conflict, InvalidInput
from controlplane.telemetry import current_trace_id

from .models import Run, StepCheckpoint
from .workflows import BUILTIN_WORKFLOWS, StepContext, workflow_spec

logger = logging.getLogger(__name__)

WORKER_ACTOR = "system:worker"
SWEEPER_ACTOR = "system:sweeper"


@dataclass(frozen=True)
class Submission:
    run: Run
    created: bool


def task_submit(
    *,
    requester: AbstractBaseUser,
    actor: Any,
    workflow: str,
    case_id: str,
    input: dict[str, Any],
    idempotency_key: str = "",
) -> Submission:
    """Create a run for a task, or return the run an earlier identical submission created.

    The same idempotency key with the same body returns the same run; with another body
    it is a conflict. Concurrent duplicates are settled by the unique constraint.
    """
    request_digest = digest({"workflow": workflow, "case_id": case_id, "input": input})
    if idempotency_key:
        existing = _run_for_key(requester, idempotency_key, request_digest)
        if existing:
            return Submission(existing, created=False)
    spec = workflow_spec(workflow)
    if spec is None:
        known = ", ".join(sorted(BUILTIN_WORKFLOWS))
        raise InvalidInput(
            f"Unknown workflow {workflow!r}. Known workflows: {known}.",
            errors={"workflow": [f"Unknown workflow {workflow!r}."]},
        )
    try:
        with transaction.atomic():
            run = Run.objects.create(
                workflow=spec.name,
                workflow_version=spec.version,
                case_id=case_id,
                input=input,
                current_state=spec.first_step.name,
                trace_id=current_trace_id(),
                requested_by=requester,
                idempotency_key=idempotency_key,
                request_digest=request_digest,
                lease_expires_at=database_now_plus(settings.RUN_LEASE_SECONDS),
            )
            run.refresh_from_db(fields=["lease_expires_at"])
            record(
                actor,
                "run.created",
                run,
                {
                    "workflow": spec.name,
                    "workflow_version": spec.version,
                    "case_id": case_id,
                    "input_digest": digest(input),
                    "idempotency_key": idempotency_key,
                },
                trace_id=run.trace_id,
                run_id=run.pk,
            )
            _enqueue_on_commit(run.pk)
    except IntegrityError:
        # Lost a race with the same key: the winner's run is the answer.
        existing = _run_for_key(requester, idempotency_key, request_digest) if idempotency_key else None
        if existing is None:
            raise
        return Submission(existing, created=False)
    return Submission(run, created=True)


def _run_for_key(requester: AbstractBaseUser, key: str, request_digest: str) -> Run | None:
    run = Run.objects.filter(requested_by=requester, idempotency_key=key).first()
    if run and run.request_digest != request_digest:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a new task."
        )
    return run


def run_advance(*, run_id: str, worker: str) -> None:
    """Execute the run's next steps while this worker holds its lease, one commit per step."""
    lease_token = f"{worker}:{uuid.uuid4().hex[:12]}"
    if not _claim_lease(run_id, lease_token):
        logger.info("run %s is finished or leased to another worker; nothing to do", run_id)
        return
    _mark_started(run_id)
    slice_ends = time.monotonic() + settings.RUN_TIME_SLICE_SECONDS
    while _execute_next_step(run_id, lease_token):
        if time.monotonic() > slice_ends:
            _release_to_queue(run_id, lease_token)
            return


def _claim_lease(run_id: str, lease_token: str) -> bool:
    claimable = Q(lease_owner="") | Q(lease_expires_at__lt=Now())
    claimed = (
        Run.objects.filter(pk=run_id, status__in=Run.ACTIVE_STATUSES)
        .filter(claimable)
        .update(
            lease_owner=lease_token,
            lease_expires_at=database_now_plus(settings.RUN_LEASE_SECONDS),
            updated_at=Now(),
        )
    )
    return claimed == 1


@transaction.atomic
def _mark_started(run_id: str) -> None:
    run = Run.objects.select_for_update().get(pk=run_id)
    if run.status == Run.Status.QUEUED:
        run.status = Run.Status.RUNNING
        run.updated_at = Now()
        run.save(update_fields=["status", "updated_at"])
        record(
            WORKER_ACTOR,
            "run.started",
            run,
            {"state": run.current_state},
            trace_id=run.trace_id,
            run_id=run.pk,
            release_id=run.release_id,
        )


def _execute_next_step(run_id: str, lease_token: str) -> bool:
    """Run one step and commit its checkpoint; True when the run has more steps to go."""
    run = Run.objects.get(pk=run_id)
    if run.lease_owner != lease_token or run.status != Run.Status.RUNNING:
        return False
    spec = workflow_spec(run.workflow)
    step = spec.step(run.current_state)
    results = dict(run.checkpoints.values_list("state", "output"))
    context = StepContext(run_id=str(run.pk), case_id=run.case_id, original_input=run.input, results=results)
    started_at = database_now()
    try:
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
        run.updated_at = Now()
        if next_state:
            run.current_state = next_state
            run.lease_expires_at = database_now_plus(settings.RUN_LEASE_SECONDS)
        else:
            run.status = Run.Status.SUCCEEDED
            run.finished_at = Now()
            run.lease_owner, run.lease_expires_at = "", None
        run.save(
            update_fields=[
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
        lease_owner="", lease_expires_at=database_now_plus(settings.RUN_LEASE_SECONDS), updated_at=Now()
    )
    if released:
        _enqueue_on_commit(run_id)


def runs_sweep_expired_leases(*, limit: int = 500) -> int:
    """Re-enqueue active runs whose lease expired (dead worker or lost message)."""
    expired = list(
        Run.objects.filter(status__in=Run.ACTIVE_STATUSES, lease_expires_at__lt=Now())
        .order_by("lease_expires_at")
        .values_list("pk", flat=True)[:limit]
    )
    requeued = 0
    for run_id in expired:
        with transaction.atomic():
            run = (
                Run.objects.select_for_update()
                .filter(pk=run_id, status__in=Run.ACTIVE_STATUSES, lease_expires_at__lt=Now())
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
            _enqueue_on_commit(run.pk)
            requeued += 1
    return requeued


def _enqueue_on_commit(run_id: Any) -> None:
    from .tasks import advance_run

    transaction.on_commit(lambda: advance_run.delay(str(run_id)))
