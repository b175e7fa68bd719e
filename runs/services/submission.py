"""Submitting tasks: resolve the release, ask policy, create the run, hand it to the queue."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from controlplane.audit import ObjectRef, record
from controlplane.canonical import digest
from controlplane.dbtime import database_now, database_now_plus
from controlplane.errors import Conflict, Forbidden, InvalidInput
from controlplane.identity import ADMIN, PLATFORM, has_role
from controlplane.telemetry import current_trace_context
from registry.models import Release

from ..engine.released import released_workflow
from ..models import Run
from ..resolution import resolve_release, start_decision
from ..workflows import BUILTIN_WORKFLOWS, workflow_spec
from .queue import enqueue_on_commit


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
    # The run's spans, in whichever worker and however late, descend from the span of this submission.
    trace_id, trace_parent = current_trace_context()
    fields = (
        _builtin_fields(workflow)
        if workflow_spec(workflow)
        else _released_fields(
            requester=requester,
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
                    trace_parent=trace_parent,
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
                enqueue_on_commit(run.pk)
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


def _released_fields(
    *, requester, workflow, channel, release, case_id, sensitivity, budget, deadline
) -> dict:
    if not Release.objects.filter(workflow=workflow).exists():
        known = sorted({*BUILTIN_WORKFLOWS, *Release.objects.values_list("workflow", flat=True).distinct()})
        raise InvalidInput(
            f"Unknown workflow {workflow!r}. Known workflows: {', '.join(known)}.",
            errors={"workflow": [f"Unknown workflow {workflow!r}."]},
        )
    resolution = resolve_release(
        workflow=workflow,
        channel=channel,
        release_id=release,
        case_id=case_id,
        any_release=has_role(requester, PLATFORM, ADMIN),
    )
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
