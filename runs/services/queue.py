"""Handing runs to the broker: only ever after the transaction that made them ready commits."""

from typing import Any

from django.db import transaction

from controlplane import broker

# Every run and branch handed to the broker holds a queue lease (lease_expires_at, no owner).
SWEPT_IF_LOST = "the lease sweeper sends it again once its queue lease expires"


def enqueue(run_id: Any, countdown: float = 0) -> None:
    from ..tasks import advance_run

    broker.send(advance_run, str(run_id), countdown=countdown, if_lost=SWEPT_IF_LOST)


def enqueue_on_commit(run_id: Any) -> None:
    transaction.on_commit(lambda: enqueue(run_id))


def enqueue_branch(branch_id: Any, countdown: float = 0) -> None:
    from ..tasks import advance_branch

    broker.send(advance_branch, branch_id, countdown=countdown, if_lost=SWEPT_IF_LOST)
