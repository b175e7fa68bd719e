"""Thin Celery tasks: each takes a primary key and calls one service."""

import os

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import services

# A database that is briefly unreachable is retried; the lease and the checkpoint make a
# repeated delivery harmless.
RETRIED_ON_DATABASE_ERRORS = {
    "bind": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(**RETRIED_ON_DATABASE_ERRORS)
def advance_run(self, run_id: str) -> None:
    services.run_advance(run_id=run_id, worker=f"{self.request.hostname}:{os.getpid()}")


@shared_task(**RETRIED_ON_DATABASE_ERRORS)
def advance_branch(self, branch_id: int) -> None:
    services.map_branch_advance(branch_id=branch_id, worker=f"{self.request.hostname}:{os.getpid()}")


@shared_task
def sweep_expired_leases() -> int:
    return services.runs_sweep_expired_leases()
