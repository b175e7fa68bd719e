"""A worker keeps its database connection between tasks, as a web process does between requests,
and drops it after a task that did not succeed (it may have stopped in mid-query)."""

import pytest
from celery import states
from celery.signals import task_postrun, task_prerun
from django.db import connection

from controlplane.celery import app
from runs.tasks import sweep_expired_leases as TASK

pytestmark = pytest.mark.django_db(transaction=True)


def run_task_signals(state: str) -> None:
    """What a worker sends around a task, without running one."""
    task_prerun.send(sender=TASK, task_id="t-1", task=TASK, args=(), kwargs={})
    with connection.cursor() as cursor:  # the task's work
        cursor.execute("SELECT 1")
    task_postrun.send(sender=TASK, task_id="t-1", task=TASK, args=(), kwargs={}, retval=None, state=state)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite connections are not kept")
def test_tasks_that_succeed_keep_the_connection():
    connection.ensure_connection()
    before = connection.connection

    run_task_signals(states.SUCCESS)
    run_task_signals(states.SUCCESS)

    assert connection.connection is before


@pytest.mark.parametrize("state", [states.FAILURE, states.RETRY])
def test_a_task_that_did_not_succeed_drops_the_connection(state):
    connection.ensure_connection()

    run_task_signals(state)

    assert connection.connection is None
    with connection.cursor() as cursor:  # the next task connects again
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_the_fixup_closes_connections_only_after_many_tasks():
    assert app.conf.get("CELERY_DB_REUSE_MAX") >= 100
