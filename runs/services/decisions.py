"""Human decisions on parked runs, as the approvals app hands them down."""

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from controlplane.audit import record
from controlplane.dbtime import database_now_plus
from controlplane.errors import Conflict, NotFound

from ..engine.released import released_workflow
from ..models import Effect, PendingAction, Run
from .queue import enqueue_on_commit


def pending_action_decide(*, pending_action_id: int, approved: bool, actor: Any, reason: str = "") -> Run:
    """Apply a human decision to a parked run: approval resumes it from its checkpoint (the
    approved action is then carried out exactly as proposed); rejection follows the step's
    `on_reject` (`fail` compensates the effects the run committed) or ends the run as rejected.
    Exactly one decision wins."""
    with transaction.atomic():
        pending, run = _lock_pending(pending_action_id)
        pending.status = PendingAction.Status.APPROVED if approved else PendingAction.Status.REJECTED
        pending.decided_at = Now()
        pending.save(update_fields=["status", "decided_at"])
        record(
            actor,
            "run.approved" if approved else "run.rejected",
            run,
            {
                "state": pending.state,
                "pending_action": pending.pk,
                "action_hash": pending.action_hash,
                "reason": reason,
            },
            **_audit(run),
        )
        handoff = "handoff" in pending.proposed_action
        if approved and handoff:
            run.status, run.finished_at = Run.Status.SUCCEEDED, Now()
            record(actor, "run.succeeded", run, {"resolved_by": "human"}, **_audit(run))
        elif approved:
            _requeue(run)
        else:
            _follow_rejection_path(run, pending, handoff)
        run.updated_at = Now()
        run.save()
    return run


def pending_action_expire(*, pending_action_id: int, actor: Any, fail: bool) -> Run:
    """Nobody decided in time: the request expires and the run fails (`fail`; effects it
    committed are compensated first) or follows its step's rejection path, as a rejection would."""
    with transaction.atomic():
        pending, run = _lock_pending(pending_action_id)
        pending.status, pending.decided_at = PendingAction.Status.EXPIRED, Now()
        pending.save(update_fields=["status", "decided_at"])
        record(
            actor,
            "run.approval_expired",
            run,
            {"state": pending.state, "pending_action": pending.pk, "action_hash": pending.action_hash},
            **_audit(run),
        )
        if fail:
            _fail(run, f"the approval request for {pending.state} expired")
            record(
                actor,
                "run.failed" if run.status == Run.Status.FAILED else "run.compensating",
                run,
                {"state": pending.state, "error": run.error},
                **_audit(run),
            )
        else:
            _follow_rejection_path(run, pending, "handoff" in pending.proposed_action)
        run.updated_at = Now()
        run.save()
    return run


def _lock_pending(pending_action_id: int) -> tuple[PendingAction, Run]:
    pending = PendingAction.objects.select_for_update().filter(pk=pending_action_id).first()
    if pending is None:
        raise NotFound("No such pending action.")
    if pending.status != PendingAction.Status.PENDING:
        raise Conflict(f"This request was already {pending.status}.")
    return pending, Run.objects.select_for_update().get(pk=pending.run_id)


def _follow_rejection_path(run: Run, pending: PendingAction, handoff: bool) -> None:
    on_reject = (
        ""
        if handoff or not run.release_id
        else released_workflow(run.release_id).step(pending.state).get("on_reject", "")
    )
    if on_reject not in ("", "end", "fail"):
        run.current_state = on_reject
        _requeue(run)
    elif on_reject == "fail":
        _fail(run, f"the request for {pending.state} was rejected")
    else:
        run.status, run.finished_at = Run.Status.REJECTED, Now()


def _fail(run: Run, error: str) -> None:
    """Fail the run; effects it already committed are undone first (saga), by a worker."""
    run.error = error
    if Effect.objects.filter(run=run, status=Effect.Status.COMMITTED).exists():
        run.status = Run.Status.COMPENSATING
        run.lease_owner, run.lease_expires_at = "", database_now_plus(settings.RUN_LEASE_SECONDS)
        enqueue_on_commit(run.pk)
    else:
        run.status, run.finished_at = Run.Status.FAILED, Now()


def _requeue(run: Run) -> None:
    run.status = Run.Status.QUEUED
    run.lease_owner, run.lease_expires_at = "", database_now_plus(settings.RUN_LEASE_SECONDS)
    enqueue_on_commit(run.pk)


def _audit(run: Run) -> dict:
    return {"trace_id": run.trace_id, "run_id": run.pk, "release_id": run.release_id}
