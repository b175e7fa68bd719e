"""Operator actions on runs: cancel, and retry from the dead-letter queue (optionally repaired)."""

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from controlplane.audit import record
from controlplane.canonical import digest
from controlplane.dbtime import database_now_plus
from controlplane.errors import Conflict, InvalidInput

from ..models import Effect, MapBranch, PendingAction, Run
from .queue import enqueue_on_commit

# A dead letter or a held compensation is "cancelled" when an operator discards it.
CANCELLABLE = (
    Run.Status.QUEUED,
    Run.Status.RUNNING,
    Run.Status.WAITING_APPROVAL,
    Run.Status.DEAD_LETTERED,
    Run.Status.COMPENSATION_FAILED,
)
RETRYABLE = (Run.Status.DEAD_LETTERED, Run.Status.FAILED, Run.Status.COMPENSATION_FAILED)
DEAD_LETTERS = (Run.Status.DEAD_LETTERED, Run.Status.COMPENSATION_FAILED)


def _audit(run: Run) -> dict:
    return {"trace_id": run.trace_id, "run_id": run.pk, "release_id": run.release_id}


@transaction.atomic
def run_cancel(*, run: Run, actor: Any, reason: str = "") -> Run:
    """Stop a run that has not finished, or discard a dead letter. A worker holding the run
    notices at its next commit (its lease is gone) and writes nothing more."""
    return _cancel(run, actor, reason, CANCELLABLE, "A {status} run cannot be cancelled.")


@transaction.atomic
def run_discard(*, run: Run, actor: Any, reason: str = "") -> Run:
    """Discard a dead letter (cancel it) while it still is one: a run another operator retried
    a moment ago is on its way again, and cancelling it would quietly undo that retry."""
    refusal = "The run has left the dead-letter queue (it is {status} now); it was not discarded."
    return _cancel(run, actor, reason, DEAD_LETTERS, refusal)


def _cancel(run: Run, actor: Any, reason: str, cancellable: tuple[str, ...], refusal: str) -> Run:
    # Its open requests are locked before the run, in the order a reviewer's decision takes
    # them: taken the other way round, a cancel and a decision at once could deadlock.
    pending = PendingAction.objects.select_for_update().filter(
        run_id=run.pk, status=PendingAction.Status.PENDING
    )
    pending_ids = list(pending.values_list("pk", flat=True))
    run = Run.objects.select_for_update().get(pk=run.pk)
    if run.status not in cancellable:
        raise Conflict(refusal.format(status=run.status))
    previous = run.status
    run.status, run.finished_at, run.updated_at = Run.Status.CANCELLED, Now(), Now()
    run.lease_owner, run.lease_expires_at = "", None
    run.save()
    PendingAction.objects.filter(pk__in=pending_ids).update(status=PendingAction.Status.SUPERSEDED)
    # Branches not started yet never start; a running one finishes its call and fans in nothing.
    MapBranch.objects.filter(run=run, status__in=[MapBranch.Status.PENDING, MapBranch.Status.QUEUED]).update(
        status=MapBranch.Status.CANCELLED, lease_expires_at=None, finished_at=Now(), updated_at=Now()
    )
    record(actor, "run.cancelled", run, {"from": previous, "reason": reason}, **_audit(run))
    return run


@transaction.atomic
def run_retry(*, run: Run, actor: Any, repaired_input: dict | None = None, reason: str = "") -> Run:
    """Re-inject a dead-lettered or failed run at the step where it stopped; a run whose
    compensation failed goes on undoing its effects instead, never forward: the effects
    already undone would otherwise stay undone under a run that then succeeds.

    A repaired input replaces the original one (both digests are audited); approvals given
    for the old input no longer apply, because the actions they bound to will differ.
    """
    run = Run.objects.select_for_update().get(pk=run.pk)
    if run.status not in RETRYABLE:
        raise Conflict(f"Only dead-lettered or failed runs can be retried; this one is {run.status}.")
    payload = {"from": run.status, "state": run.current_state, "error": run.error, "reason": reason}
    if run.status == Run.Status.COMPENSATION_FAILED:
        _resume_compensation(run, repaired_input, payload)
    else:
        _resume_forward(run, repaired_input, payload)
    # A poison dead letter's count of claims without progress would dead-letter it again at once.
    run.claims_since_progress = 0
    run.lease_owner, run.lease_expires_at = "", database_now_plus(settings.RUN_LEASE_SECONDS)
    run.updated_at = Now()
    run.save()
    record(actor, "run.retried", run, payload, **_audit(run))
    enqueue_on_commit(run.pk)
    return run


def _resume_compensation(run: Run, repaired_input: dict | None, payload: dict) -> None:
    """The effects whose compensation failed are to be undone again, then the older ones, as
    the saga goes (it undoes committed effects, newest first); the run keeps its error."""
    if repaired_input is not None:
        raise InvalidInput(
            "A run whose compensation failed is retried by undoing its effects again: "
            "a repaired input has nothing to apply to.",
            errors={"repaired_input": ["Not for a run whose compensation failed."]},
        )
    failed = Effect.objects.filter(run=run, status=Effect.Status.COMPENSATION_FAILED)
    payload["compensation_resumed"] = list(failed.values_list("tool", flat=True))
    failed.update(status=Effect.Status.COMMITTED, updated_at=Now())
    run.status = Run.Status.COMPENSATING


def _resume_forward(run: Run, repaired_input: dict | None, payload: dict) -> None:
    if repaired_input is not None:
        payload |= {"input_digest_before": digest(run.input), "input_digest_after": digest(repaired_input)}
        run.input = repaired_input
        PendingAction.objects.filter(run=run, status=PendingAction.Status.APPROVED).update(
            status=PendingAction.Status.SUPERSEDED
        )
    # A map step starts again with the branches that did not succeed; the others keep their outputs.
    reset = MapBranch.objects.filter(
        run=run,
        state=run.current_state,
        sequence=run.checkpoints.count() + 1,
        status__in=[MapBranch.Status.FAILED, MapBranch.Status.CANCELLED],
    ).update(status=MapBranch.Status.PENDING, attempts=0, error="", lease_owner="", finished_at=None)
    if reset:
        payload["branches_reset"] = reset
    run.status, run.error, run.step_attempts, run.finished_at = Run.Status.QUEUED, "", 0, None
