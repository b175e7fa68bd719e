"""Human decisions on parked runs, as the approvals app hands them down."""

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from controlplane.audit import Entry, ledger_lock_condition, record, record_many
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
        return pending_action_settle(pending=pending, run=run, approved=approved, actor=actor, reason=reason)


def pending_action_settle(
    *,
    pending: PendingAction,
    run: Run,
    approved: bool,
    actor: Any,
    reason: str = "",
    audit_first: Sequence[Entry] = (),
    **pending_changes: Any,
) -> Run:
    """`pending_action_decide` for a caller that holds the pending request's row lock in its
    own transaction and has seen it pending (the approvals app locks it with the run read in
    one statement). Only what changes is written: the request (with `pending_changes`, more of
    its columns), the run if it still waits for this decision (else Conflict), then the
    caller's `audit_first` events and this decision's in one append."""
    pending.status = PendingAction.Status.APPROVED if approved else PendingAction.Status.REJECTED
    pending.decided_at = Now()
    for field, value in pending_changes.items():
        setattr(pending, field, value)
    # A save, not a queryset update: its post_save signal closes the approval.wait span.
    pending.save(update_fields=["status", "decided_at", *pending_changes])
    audit = _audit(run)
    events = [*audit_first, run_decided_entry(pending, run, approved, actor, reason)]
    handoff = "handoff" in pending.proposed_action
    if approved and handoff:
        changes = {"status": Run.Status.SUCCEEDED, "finished_at": Now()}
        events.append(Entry(actor, "run.succeeded", run, {"resolved_by": "human"}, **audit))
    elif approved:
        changes = _requeue(run)
    else:
        changes = _follow_rejection_path(run, pending, handoff)
    # The run's update takes the ledger's lock: the append goes last, in the next round trip.
    waiting = Run.objects.filter(*ledger_lock_condition(), pk=run.pk, status=Run.Status.WAITING_APPROVAL)
    if not waiting.update(**changes, updated_at=Now()):
        raise Conflict("The run no longer waits for this decision.")
    _set(run, changes)
    record_many(events, ledger_locked=True)
    return run


def run_decided_entry(pending: PendingAction, run: Run, approved: bool, actor: Any, reason: str) -> Entry:
    """The run's event of a human decision: `run.approved` or `run.rejected`."""
    return Entry(
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
            _set(run, _fail(run, f"the approval request for {pending.state} expired"))
            record(
                actor,
                "run.failed" if run.status == Run.Status.FAILED else "run.compensating",
                run,
                {"state": pending.state, "error": run.error},
                **_audit(run),
            )
        else:
            _set(run, _follow_rejection_path(run, pending, "handoff" in pending.proposed_action))
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


def _follow_rejection_path(run: Run, pending: PendingAction, handoff: bool) -> dict[str, Any]:
    on_reject = (
        ""
        if handoff or not run.release_id
        else released_workflow(run.release_id).step(pending.state).get("on_reject", "")
    )
    if on_reject not in ("", "end", "fail"):
        return {"current_state": on_reject, **_requeue(run)}
    if on_reject == "fail":
        return _fail(run, f"the request for {pending.state} was rejected")
    return {"status": Run.Status.REJECTED, "finished_at": Now()}


def _fail(run: Run, error: str) -> dict[str, Any]:
    """Fail the run; effects it already committed are undone first (saga), by a worker."""
    if Effect.objects.filter(run=run, status=Effect.Status.COMMITTED).exists():
        enqueue_on_commit(run.pk)
        return {
            "error": error,
            "status": Run.Status.COMPENSATING,
            "lease_owner": "",
            "lease_expires_at": database_now_plus(settings.RUN_LEASE_SECONDS),
        }
    return {"error": error, "status": Run.Status.FAILED, "finished_at": Now()}


def _requeue(run: Run) -> dict[str, Any]:
    enqueue_on_commit(run.pk)
    return {
        "status": Run.Status.QUEUED,
        "lease_owner": "",
        "lease_expires_at": database_now_plus(settings.RUN_LEASE_SECONDS),
    }


def _set(run: Run, changes: dict[str, Any]) -> None:
    for field, value in changes.items():
        setattr(run, field, value)


def _audit(run: Run) -> dict:
    return {"trace_id": run.trace_id, "run_id": run.pk, "release_id": run.release_id}
