"""Run use cases. Writes only happen here; each one audits itself in its own transaction."""

from .advance import SWEEPER_ACTOR, WORKER_ACTOR, run_advance, runs_sweep_expired_leases
from .branches import map_branch_advance
from .decisions import pending_action_decide
from .operations import run_cancel, run_discard, run_retry
from .submission import Submission, task_submit

__all__ = [
    "SWEEPER_ACTOR",
    "WORKER_ACTOR",
    "Submission",
    "map_branch_advance",
    "pending_action_decide",
    "run_advance",
    "run_cancel",
    "run_discard",
    "run_retry",
    "runs_sweep_expired_leases",
    "task_submit",
]
