"""Runs parked at approval points of the demo support workflow, and the people who decide."""

import pytest

from approvals import selectors
from controlplane.identity import REVIEWER, actor_for
from runs import services as run_services
from runs.models import PendingAction, Run
from tests.factories import UserFactory

from .scenarios import SMALL_REFUND, advance, pending_of


@pytest.fixture(autouse=True)
def _workflows_read_afresh(monkeypatch):
    """Each test reads the inbox's workflows to filter on anew (a process keeps them a minute)."""
    monkeypatch.setattr(selectors, "_workflows_read", (float("-inf"), []))


@pytest.fixture
def submit(demo_registry, requester):
    """Submit a support case on the staging release, as `requester` (or `as_user`)."""

    def submit_task(task_input=SMALL_REFUND, case_id="CASE-1001", as_user=None, **extra) -> Run:
        user = as_user or requester
        return run_services.task_submit(
            requester=user,
            actor=actor_for(user),
            workflow="support_case_resolution",
            case_id=case_id,
            input=task_input,
            channel="staging",
            **extra,
        ).run

    return submit_task


@pytest.fixture
def parked(submit):
    """A run parked at its irreversible commit (one reviewer decides), and its request."""

    def park(task_input=SMALL_REFUND, **extra) -> PendingAction:
        return pending_of(advance(submit(task_input, **extra)))

    return park


@pytest.fixture
def reviewer2(db):
    return UserFactory(username="reviewer2", email="reviewer2@example.org", roles=[REVIEWER])
