"""What one step costs in database statements, pinned so that it cannot silently grow again.

A step of a running released workflow, once the worker holds the lease and has read the run,
on PostgreSQL: one call of the step-commit function, sent outside any transaction block so that
it commits by itself (no BEGIN, no COMMIT). On SQLite, in a transaction: lock the run row
reading the lease and the database clock; log the transition decision; insert the checkpoint;
update the run; append the step's audit events (the head read, then one INSERT).
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.audit import verify_chain
from runs import services
from runs.models import Run, StepCheckpoint
from tests.support.workflows import workflow

pytestmark = pytest.mark.django_db
POSTGRES = connection.vendor == "postgresql"
PER_STEP = 1 if POSTGRES else 6
# Per run: claim the lease reading the run in the same statement and start the queued run with
# its audit event (on PostgreSQL one function call; on SQLite UPDATE ... RETURNING, then the
# status update, the head read and the INSERT).
PER_RUN = 1 if POSTGRES else 4


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

    run = submit(f"gates_{steps}", {"never_true": False})
    sql = statements(run)

    listing = "\n".join(s[:120] for s in sql)
    assert len(sql) == PER_RUN + PER_STEP * steps, listing
    appends = [
        s
        for s in sql
        if s.startswith(('INSERT INTO "controlplane_auditevent"', "SELECT * FROM baton_audit_append("))
    ]
    assert sum(s.startswith("SELECT clock_timestamp()") for s in sql) == 0  # clocks ride along
    assert sum(s.startswith('SELECT "runs_run"."id"') for s in sql) == 0  # the claim reads the run
    if POSTGRES:
        assert sum(s.startswith("SELECT * FROM baton_step_commit(") for s in sql) == steps
        assert not appends  # the start's event is appended by the claim, the steps' by their commits
    else:
        assert sum('INSERT INTO "runs_stepcheckpoint"' in s for s in sql) == steps
        assert len(appends) == steps + 1  # the start's and each step's
    assert StepCheckpoint.objects.filter(run=run).count() == steps
    assert verify_chain().ok


def test_a_run_taken_up_again_reads_its_checkpoints_with_its_claim(publish, submit, settings):
    publish(gates("gates_taken_up", 3))
    run = submit("gates_taken_up", {"never_true": False})
    settings.RUN_TIME_SLICE_SECONDS = 0  # the first worker gives the run back after one step
    services.run_advance(run_id=str(run.pk), worker="first")
    settings.RUN_TIME_SLICE_SECONDS = 60

    sql = statements(run)

    checkpoint_reads = [s for s in sql if s.startswith('SELECT "runs_stepcheckpoint"')]
    if POSTGRES:
        assert (len(sql), checkpoint_reads) == (1 + 2 * PER_STEP, []), "\n".join(s[:120] for s in sql)
    else:
        assert len(checkpoint_reads) == 1
    # The second worker numbered its steps on from the first's: it knew the first step's checkpoint.
    checkpoints = StepCheckpoint.objects.filter(run=run).order_by("sequence")
    assert list(checkpoints.values_list("sequence", "state")) == [(1, "gate_1"), (2, "gate_2"), (3, "gate_3")]
    assert verify_chain().ok
