"""What the step and branch executors share: the worker's identity, the lease-checked lock, a
lease long enough for a step, spend, the effect a tool call committed, and statements that
commit by themselves."""

import contextlib

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models.functions import Now

from controlplane.dbtime import database_now_plus

from ..models import Effect, Run

WORKER = "system:worker"
# Time a step needs beyond its calls (policy, envelope, commit), so that its lease outlasts it.
_LEASE_MARGIN_S = 5.0


def locked_run(run: Run, lease_token: str) -> Run | None:
    """The run row locked for this transaction, or None when the lease is no longer ours."""
    locked = Run.objects.select_for_update().get(pk=run.pk)
    return locked if locked.lease_owner == lease_token else None


def lease_lasts(model: type[models.Model], pk, lease_token: str, step_seconds: float) -> bool:
    """Whether the lease of a run or branch covers the step's calls, extended first (one
    conditional UPDATE) when they may outlast it: else the sweeper would hand it to another
    worker mid-call, and a step slower than the lease would be taken away at every attempt."""
    needed = step_seconds + _LEASE_MARGIN_S
    if needed <= settings.RUN_LEASE_SECONDS:  # the claim or the last commit gave it a whole lease
        return True
    extended = model.objects.filter(pk=pk, lease_owner=lease_token).update(
        lease_expires_at=database_now_plus(needed)
    )
    return extended == 1


def own_transaction():
    """For a statement meant to commit by itself: outside a transaction block it does; inside a
    caller's, a savepoint keeps that transaction usable should the statement fail."""
    return transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()


def audit_ids(run: Run) -> dict:
    return {"trace_id": run.trace_id, "run_id": run.pk, "release_id": run.release_id}


def add_spent(spent: dict, increments: dict) -> dict:
    total = dict(spent)
    for key, value in increments.items():
        total[key] = round(total.get(key, 0) + value, 6)
    return total


def record_committed_effect(details: dict, result: dict) -> None:
    """Mark the effect a tool step wrote ahead (its id in `details`) as committed with its result."""
    effect_pk = details.get("effect")
    if effect_pk:
        Effect.objects.filter(pk=effect_pk).update(
            status=Effect.Status.COMMITTED,
            result=result,
            effect_id=details.get("effect_id", ""),
            updated_at=Now(),
        )
