"""What one step costs in database statements, pinned so that it cannot silently grow again.

A step of a running released workflow, once the worker holds the lease and has read the run:
lock the run row reading the lease and the database clock; log the transition decision;
insert the checkpoint and update the run (one statement on PostgreSQL, which also takes the
ledger's lock); append the step's audit events, also when the run ends (on PostgreSQL one call
of the append function, which reads the chain head and inserts; on SQLite the head read, then
one INSERT). Plus BEGIN and COMMIT, which are not counted here.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.audit import verify_chain
from runs import services
from runs.models import Run
from tests.support.workflows import workflow

pytestmark = pytest.mark.django_db
POSTGRES = connection.vendor == "postgresql"
PER_STEP = 4 if POSTGRES else 6
# Per run: claim the lease, read the run (with the clock), mark it started (the update, then
# its audit append, which takes the ledger's lock). A new run has no checkpoints to read.
PER_RUN = 4 if POSTGRES else 5


def gates(name: str, count: int) -> dict:
    """`count` human gates whose condition is false: each step completes without a call."""
    steps = [{"name": f"gate_{n}", "human_if": ["never_true == true"]} for n in range(1, count + 1)]
    return workflow(name, *steps, max_hops=10, deadline_s=3600)


def statements(run: Run) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        services.run_advance(run_id=str(run.pk), worker="test")
    assert Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED
    # Savepoints only exist because each test runs inside a transaction.
    return [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]


@pytest.mark.parametrize("steps", [3, 6])
def test_a_step_costs_a_fixed_number_of_statements(publish, submit, steps):
    publish(gates(f"gates_{steps}", steps))

    sql = statements(submit(f"gates_{steps}", {"never_true": False}))

    listing = "\n".join(s[:120] for s in sql)
    assert len(sql) == PER_RUN + PER_STEP * steps, listing
    assert sum('INSERT INTO "runs_stepcheckpoint"' in s for s in sql) == steps
    appends = [
        s
        for s in sql
        if s.startswith(('INSERT INTO "controlplane_auditevent"', "SELECT * FROM baton_audit_append("))
    ]
    assert len(appends) == steps + 1
    assert sum(s.startswith("SELECT clock_timestamp()") for s in sql) == 0  # clocks ride along
    assert sum(s.startswith('SELECT "runs_run"."id"') for s in sql) == 1  # the run is read once
    if POSTGRES:  # each step's update takes the ledger's lock; the start's append takes it itself
        assert sum("pg_advisory_xact_lock" in s for s in sql) == steps
        assert sum(s.startswith("SELECT * FROM baton_audit_append(true") for s in appends) == 1
    assert verify_chain().ok
