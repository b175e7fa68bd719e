"""Handing work to the broker once the transaction that made it ready has committed.

The database, not the broker, holds the work: each message sent here stands for a row that a
sweeper sends again when its message is lost (a run's or a branch's queue lease, a replay's or an
export's time of sending). So a broker that is down when a change commits costs that work a
delay, never the change itself, and never the request that made it: the user's change is
committed, and answering it with an error would invite them to make it twice.
"""

import logging
from typing import Any

from celery import Task
from django.db import transaction
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)


def send(task: Task, *args: Any, countdown: float | None = None, if_lost: str) -> bool:
    """Send `task` now; whether the broker took it. `if_lost` says, for the log, what becomes of
    the work when it did not."""
    try:
        task.apply_async(args, countdown=countdown or None)
    except OperationalError as error:  # unreachable even after Celery's publish retries
        logger.warning("The broker refused %s%r (%s): %s", task.name, args, error, if_lost)
        return False
    return True


def send_on_commit(task: Task, *args: Any, countdown: float | None = None, if_lost: str) -> None:
    """Send `task` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send(task, *args, countdown=countdown, if_lost=if_lost))
