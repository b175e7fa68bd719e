"""A broker that is down when a task is submitted: the run is kept, the client is answered, and
the lease sweeper sends the run once the broker is back."""

import json
import logging

import pytest

from controlplane.models import AuditEvent
from runs.models import Run
from runs.services import runs_sweep_expired_leases

TASK = {"workflow": "builtin.intake", "case_id": "CASE-1", "input": {"text": "refund please"}}


@pytest.mark.django_db
def test_a_task_submitted_while_the_broker_is_down_is_accepted_and_swept_later(
    requester, client_for, broker_down, django_capture_on_commit_callbacks, caplog
):
    client = client_for(requester)
    with (
        caplog.at_level(logging.WARNING, "controlplane.broker"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = client.post("/api/v1/tasks", json.dumps(TASK), content_type="application/json")

    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["run_id"])
    assert run.status == Run.Status.QUEUED and run.lease_owner == "" and run.lease_expires_at
    assert f"advance_run('{run.pk}',)" in caplog.text and "lease sweeper" in caplog.text

    # Its queue lease runs out with no worker having claimed it: the sweeper sends it again.
    Run.objects.filter(pk=run.pk).update(lease_expires_at="2000-01-01T00:00:00Z")
    assert runs_sweep_expired_leases() == 1
    assert AuditEvent.objects.filter(action="run.lease.expired", run_id=str(run.pk)).exists()
