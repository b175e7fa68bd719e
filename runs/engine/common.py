"""What the step and branch executors share: the worker's identity, the lease-checked lock, spend."""

from ..models import Run

WORKER = "system:worker"


def locked_run(run: Run, lease_token: str) -> Run | None:
    """The run row locked for this transaction, or None when the lease is no longer ours."""
    locked = Run.objects.select_for_update().get(pk=run.pk)
    return locked if locked.lease_owner == lease_token else None


def audit_ids(run: Run) -> dict:
    return {"trace_id": run.trace_id, "run_id": run.pk, "release_id": run.release_id}


def add_spent(spent: dict, increments: dict) -> dict:
    total = dict(spent)
    for key, value in increments.items():
        total[key] = round(total.get(key, 0) + value, 6)
    return total
