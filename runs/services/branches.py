"""Advancing one branch of a `map` step under its own lease (see runs/engine/fanout.py)."""

import logging
import uuid

from django.db import InterfaceError, OperationalError

from ..engine.fanout import claim_branch, execute_branch, fail_crashed_branch, fail_poison_branch
from .queue import enqueue

logger = logging.getLogger(__name__)


def map_branch_advance(*, branch_id: int, worker: str) -> None:
    """Run the branch once if it holds a slot and nobody else holds its lease; else nothing."""
    lease_token = f"{worker[:200]}:{uuid.uuid4().hex[:12]}"
    branch = claim_branch(branch_id, lease_token)
    if branch is None:
        logger.info("branch %s is settled, waiting for a slot or leased to another worker", branch_id)
        return
    if fail_poison_branch(branch, lease_token, enqueue):
        return
    try:
        execute_branch(branch, lease_token, enqueue)
    except (OperationalError, InterfaceError):
        raise  # the database went away: the task retries, and the lease keeps the branch meanwhile
    except Exception as exc:
        logger.exception("branch %s of run %s failed", branch_id, branch.run_id)
        fail_crashed_branch(branch, lease_token, exc, enqueue)
