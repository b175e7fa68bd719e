"""Handing runs to the broker: only ever after the transaction that made them ready commits."""

from typing import Any

from django.db import transaction


def enqueue(run_id: Any, countdown: float = 0) -> None:
    from ..tasks import advance_run

    advance_run.apply_async((str(run_id),), countdown=countdown or None)


def enqueue_on_commit(run_id: Any) -> None:
    transaction.on_commit(lambda: enqueue(run_id))


def enqueue_branch(branch_id: Any, countdown: float = 0) -> None:
    from ..tasks import advance_branch

    advance_branch.apply_async((branch_id,), countdown=countdown or None)
