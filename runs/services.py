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
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Now

from controlplane.audit import ObjectRef, record
from controlplane.canonical import digest
from controlplane.dbtime import database_now, database_now_plus
from controlplane.errors import Conflict, Forbidden, InvalidInput
from controlplane.telemetry import current_trace_id
from registry.models import Release

from .engine.core import execute_released_step
from .engine.released import released_workflow
from .models import Run, StepCheckpoint
from .resolution import resolve_release, start_decision
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
    channel: str = "",
    release: str = "",
    sensitivity: str = "internal",
    budget: dict | None = None,
    deadline: datetime | None = None,
) -> Submission:
    """Create a run for a task, or return the run an earlier identical submission created.

    Registry workflows run the release of the requested channel (canary and shadow honoured)
    or an explicit release, if policy `run.start` allows; built-in workflows need no release.
    The same idempotency key with the same body returns the same run; with another body it
    is a conflict. Concurrent duplicates are settled by the unique constraint.
    """
    request = {
        "workflow": workflow,
        "case_id": case_id,
        "input": input,
        "channel": channel,
        "release": release,
        "sensitivity": sensitivity,
        "budget": budget,
        "deadline": deadline.isoformat() if deadline else None,
    }
    request_digest = digest({k: v for k, v in request.items() if v not in ("", None)} | {"input": input})
    if idempotency_key:
        existing = _run_for_key(requester, idempotency_key, request_digest)
        if existing:
            return Submission(existing, created=False)
    trace_id = current_trace_id()
    fields = (
        _builtin_fields(workflow)
        if workflow_spec(workflow)
        else _released_fields(
            workflow=workflow,
            channel=channel,
            release=release,
            case_id=case_id,
            sensitivity=sensitivity,
            budget=budget,
            deadline=deadline,
        )
    )
    refusal = None
    try:
        with transaction.atomic():
            if "released" in fields:
                released = fields.pop("released")
                decision = start_decision(
                    actor=actor,
                    released=released,
                    channel=fields["channel"],
                    case_id=case_id,
                    sensitivity=sensitivity,
                    budget=fields["budget"],
                    deadline=fields["deadline"].timestamp() if fields["deadline"] else None,
                    task_input=input,
                    trace_id=trace_id,
                )
                if not decision.allow:
                    refusal = decision
                    record(
                        actor,
                        "task.refused",
                        ObjectRef("workflow", workflow),
                        {
                            "case_id": case_id,
                            "release_id": released.release_id,
                            "reasons": decision.reasons,
                            "policy_decision": decision.decision_id,
                        },
                        trace_id=trace_id,
                    )
            if refusal is None:
                run = Run.objects.create(
                    case_id=case_id,
                    input=input,
                    trace_id=trace_id,
                    requested_by=requester,
                    idempotency_key=idempotency_key,
                    request_digest=request_digest,
                    sensitivity=sensitivity,
                    lease_expires_at=database_now_plus(settings.RUN_LEASE_SECONDS),
                    **fields,
                )
                run.refresh_from_db(fields=["lease_expires_at"])
                record(
                    actor,
                    "run.created",
                    run,
                    {
                        "workflow": run.workflow,
                        "workflow_version": run.workflow_version,
                        "case_id": case_id,
                        "channel": run.channel,
                        "shadow_release": run.shadow_release_id or None,
                        "input_digest": digest(input),
                        "idempotency_key": idempotency_key,
                    },
                    trace_id=trace_id,
                    run_id=run.pk,
                    release_id=run.release_id,
                )
                _enqueue_on_commit(run.pk)
    except IntegrityError:
        # Lost a race with the same key: the winner's run is the answer.
        existing = _run_for_key(requester, idempotency_key, request_digest) if idempotency_key else None
        if existing is None:
            raise
        return Submission(existing, created=False)
    if refusal is not None:
        raise Forbidden(
            f"Policy refuses this task: {'; '.join(refusal.reasons)}.", errors={"policy": refusal.reasons}
        )
    return Submission(run, created=True)


def _builtin_fields(workflow: str) -> dict:
    spec = workflow_spec(workflow)
    return {"workflow": spec.name, "workflow_version": spec.version, "current_state": spec.first_step.name}


def _released_fields(*, workflow, channel, release, case_id, sensitivity, budget, deadline) -> dict:
    if not Release.objects.filter(workflow=workflow).exists():
        known = sorted({*BUILTIN_WORKFLOWS, *Release.objects.values_list("workflow", flat=True).distinct()})
        raise InvalidInput(
            f"Unknown workflow {workflow!r}. Known workflows: {', '.join(known)}.",
            errors={"workflow": [f"Unknown workflow {workflow!r}."]},
        )
    resolution = resolve_release(workflow=workflow, channel=channel, release_id=release, case_id=case_id)
    released = released_workflow(resolution.release.pk)
    limits = released.definition.get("limits", {})
    default_budget = {
        key: limits[limit]
        for key, limit in (
            ("cost_usd", "max_cost_usd"),
            ("tool_calls", "max_tool_calls"),
            ("tokens", "max_tokens"),
        )
        if limit in limits
    }
    if deadline is None and "deadline_s" in limits:
        deadline = database_now() + timedelta(seconds=limits["deadline_s"])
    return {
        "workflow": workflow,
        "workflow_version": released.definition["version"],
        "release_id": resolution.release.pk,
        "channel": resolution.channel,
        "shadow_release_id": resolution.shadow_release_id,
        "current_state": released.first_state,
        "budget": {**default_budget, **(budget or {})},
        "deadline": deadline,
        "released": released,
    }


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
    if run.release_id:
        return execute_released_step(run, lease_token, enqueue=_enqueue)
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


def _enqueue(run_id: Any, countdown: float = 0) -> None:
    from .tasks import advance_run

    advance_run.apply_async((str(run_id),), countdown=countdown or None)


def _enqueue_on_commit(run_id: Any) -> None:
    transaction.on_commit(lambda: _enqueue(run_id))
