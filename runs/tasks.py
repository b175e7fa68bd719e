"""Thin Celery tasks: each takes a primary key and calls one service."""

import os

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import services


@shared_task(
    bind=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=8,
)
def advance_run(self, run_id: str) -> None:
    services.run_advance(run_id=run_id, worker=f"{self.request.hostname}:{os.getpid()}")


@shared_task(
    bind=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=8,
)
def advance_branch(self, branch_id: int) -> None:
    services.map_branch_advance(branch_id=branch_id, worker=f"{self.request.hostname}:{os.getpid()}")


@shared_task
def sweep_expired_leases() -> int:
    return services.runs_sweep_expired_leases()
