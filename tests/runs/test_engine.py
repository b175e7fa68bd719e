"""The run engine in process: leases, checkpoints, audit, sweeper (the worker tests run it for real)."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from controlplane.audit import verify_chain
from controlplane.canonical import digest
from controlplane.identity import Actor
from controlplane.models import AuditEvent
from runs import services, workflows
from runs.models import Run, StepCheckpoint
from runs.services.advance import _claim_lease as claim_lease

pytestmark = pytest.mark.django_db


@pytest.fixture
def submitted_run(requester):
    return services.task_submit(
        requester=requester,
        actor=Actor("requester"),
        workflow="builtin.intake",
        case_id="CASE-7",
        input={"text": "I want my money back"},
    ).run


def run_events(run):
    return list(AuditEvent.objects.filter(run_id=str(run.pk)).values_list("action", flat=True))


def test_a_worker_runs_every_step_with_one_checkpoint_each(submitted_run):
    services.run_advance(run_id=str(submitted_run.pk), worker="w1")

    run = Run.objects.get(pk=submitted_run.pk)
    assert run.status == Run.Status.SUCCEEDED
    assert run.finished_at is not None and run.lease_owner == ""
    steps = list(run.checkpoints.order_by("sequence").values_list("state", "output"))
    assert steps == [
        ("classify", {"intent": "refund", "characters": 20}),
        ("acknowledge", {"intent": "refund", "message": "Case CASE-7: your refund has been received."}),
    ]
    assert run_events(run) == [
        "run.created",
        "run.started",
        "run.step.completed",
        "run.step.completed",
        "run.succeeded",
    ]
    transition = AuditEvent.objects.filter(action="run.step.completed").first()
    assert transition.payload["state"] == "classify" and transition.payload["next_state"] == "acknowledge"
    assert verify_chain().ok


def test_a_duplicate_delivery_changes_nothing(submitted_run):
    services.run_advance(run_id=str(submitted_run.pk), worker="w1")
    before = run_events(submitted_run)

    services.run_advance(run_id=str(submitted_run.pk), worker="w2")

    assert run_events(submitted_run) == before
    assert StepCheckpoint.objects.filter(run=submitted_run).count() == 2


def test_a_run_leased_to_a_live_worker_is_left_alone(submitted_run):
    Run.objects.filter(pk=submitted_run.pk).update(
        lease_owner="other", lease_expires_at=timezone.now() + timedelta(minutes=5)
    )

    services.run_advance(run_id=str(submitted_run.pk), worker="w1")

    assert Run.objects.get(pk=submitted_run.pk).status == Run.Status.QUEUED
    assert not StepCheckpoint.objects.exists()


def test_the_sweeper_requeues_runs_whose_lease_expired(submitted_run, django_capture_on_commit_callbacks):
    Run.objects.filter(pk=submitted_run.pk).update(
        status=Run.Status.RUNNING,
        lease_owner="dead-worker",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )

    with django_capture_on_commit_callbacks() as callbacks:
        assert services.runs_sweep_expired_leases() == 1
    assert len(callbacks) == 1  # the run is handed back to the queue once the sweep commits

    run = Run.objects.get(pk=submitted_run.pk)
    assert run.lease_owner == "" and run.lease_expires_at > timezone.now()
    expired = AuditEvent.objects.get(action="run.lease.expired")
    assert expired.payload["previous_owner"] == "dead-worker"
    assert services.runs_sweep_expired_leases() == 0  # not again until the new lease expires

    services.run_advance(run_id=str(run.pk), worker="w2")
    assert Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED


def test_a_worker_that_lost_its_lease_cannot_commit(submitted_run, monkeypatch):
    real_handler = workflows.BUILTIN_WORKFLOWS["builtin.intake"].step("classify").handler

    def slow_classify(context):
        # While this worker is busy, the sweeper gives the run to someone else.
        Run.objects.filter(pk=submitted_run.pk).update(lease_owner="someone-else")
        return real_handler(context)

    spec = workflows.WorkflowSpec(
        "builtin.intake",
        "1",
        (
            workflows.StepSpec("classify", slow_classify, next=("acknowledge",)),
            workflows.StepSpec(
                "acknowledge", workflows.BUILTIN_WORKFLOWS["builtin.intake"].step("acknowledge").handler
            ),
        ),
    )
    monkeypatch.setitem(workflows.BUILTIN_WORKFLOWS, "builtin.intake", spec)

    services.run_advance(run_id=str(submitted_run.pk), worker="w1")

    assert not StepCheckpoint.objects.exists()
    assert "run.step.completed" not in run_events(submitted_run)


def test_a_step_that_raises_fails_the_run_with_its_error(submitted_run, monkeypatch):
    def broken(context):
        raise RuntimeError("classifier unavailable")

    spec = workflows.WorkflowSpec("builtin.intake", "1", (workflows.StepSpec("classify", broken),))
    monkeypatch.setitem(workflows.BUILTIN_WORKFLOWS, "builtin.intake", spec)

    services.run_advance(run_id=str(submitted_run.pk), worker="w1")

    run = Run.objects.get(pk=submitted_run.pk)
    assert run.status == Run.Status.FAILED
    assert run.error == "RuntimeError: classifier unavailable"
    failed = AuditEvent.objects.get(action="run.failed")
    assert failed.payload == {"state": "classify", "error": "RuntimeError: classifier unavailable"}


def test_a_run_gives_its_worker_back_after_its_time_slice(
    submitted_run, settings, django_capture_on_commit_callbacks
):
    settings.RUN_TIME_SLICE_SECONDS = 0

    with django_capture_on_commit_callbacks() as callbacks:
        services.run_advance(run_id=str(submitted_run.pk), worker="w1")

    run = Run.objects.get(pk=submitted_run.pk)
    assert (run.status, run.current_state, run.lease_owner) == (Run.Status.RUNNING, "acknowledge", "")
    assert StepCheckpoint.objects.filter(run=run).count() == 1
    assert len(callbacks) == 1


def test_a_run_that_keeps_killing_its_workers_is_dead_lettered(submitted_run, settings):
    settings.RUN_MAX_CLAIMS = 2
    for worker in ("w1", "w2"):  # each takes the lease and dies before committing anything
        Run.objects.filter(pk=submitted_run.pk).update(lease_owner="", lease_expires_at=None)
        assert claim_lease(str(submitted_run.pk), worker)[0]
    Run.objects.filter(pk=submitted_run.pk).update(lease_owner="", lease_expires_at=None)

    services.run_advance(run_id=str(submitted_run.pk), worker="w3")

    run = Run.objects.get(pk=submitted_run.pk)
    assert run.status == Run.Status.DEAD_LETTERED
    assert "stopped its worker 2 times" in run.error
    assert not StepCheckpoint.objects.exists()
    assert AuditEvent.objects.get(action="run.dead_lettered").payload["claims"] == 3


def test_an_operator_retry_of_a_run_that_kept_killing_its_workers_runs_it(submitted_run, settings):
    settings.RUN_MAX_CLAIMS = 2
    for worker in ("w1", "w2"):
        Run.objects.filter(pk=submitted_run.pk).update(lease_owner="", lease_expires_at=None)
        assert claim_lease(str(submitted_run.pk), worker)[0]
    Run.objects.filter(pk=submitted_run.pk).update(lease_owner="", lease_expires_at=None)
    services.run_advance(run_id=str(submitted_run.pk), worker="w3")
    assert Run.objects.get(pk=submitted_run.pk).status == Run.Status.DEAD_LETTERED

    services.run_retry(run=submitted_run, actor=Actor("operator"), reason="the crash is fixed")
    services.run_advance(run_id=str(submitted_run.pk), worker="w4")

    run = Run.objects.get(pk=submitted_run.pk)
    assert run.status == Run.Status.SUCCEEDED and run.claims_since_progress == 0
    assert StepCheckpoint.objects.filter(run=run).count() == 2
    assert run_events(run).count("run.dead_lettered") == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="there the claim starts a queued run")
def test_the_claim_starts_a_queued_run_once_and_writes_its_event_as_python_would(submitted_run):
    awkward = 'étape "1"\t\\ \x01 ✓'  # escaped differently by naive JSON writers
    Run.objects.filter(pk=submitted_run.pk).update(current_state=awkward)

    first, _ = claim_lease(str(submitted_run.pk), "w1")
    Run.objects.filter(pk=submitted_run.pk).update(lease_owner="", lease_expires_at=None)
    again, _ = claim_lease(str(submitted_run.pk), "w2")

    assert (first.status, first.lease_owner, again.status) == (Run.Status.RUNNING, "w1", Run.Status.RUNNING)
    started = AuditEvent.objects.get(action="run.started")
    assert started.payload == {"state": awkward}
    assert started.payload_digest == digest({"state": awkward})
    where = (started.actor, started.object_type, started.object_id, started.run_id, started.trace_id)
    assert where == (services.WORKER_ACTOR, "runs.run", str(first.pk), str(first.pk), first.trace_id)
    assert started.release_id == first.release_id
    assert verify_chain().ok


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent claims need row locks")
@pytest.mark.django_db(transaction=True)
def test_of_workers_claiming_a_queued_run_at_once_one_takes_and_starts_it(submitted_run):
    start = threading.Barrier(4)

    def claim(worker: str) -> Run | None:
        try:
            start.wait(timeout=10)
            return claim_lease(str(submitted_run.pk), worker)[0]
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        claimed = [run for run in pool.map(claim, ["w1", "w2", "w3", "w4"]) if run is not None]

    assert len(claimed) == 1
    run = Run.objects.get(pk=submitted_run.pk)
    assert (run.status, run.lease_owner) == (Run.Status.RUNNING, claimed[0].lease_owner)
    assert AuditEvent.objects.filter(action="run.started", run_id=str(run.pk)).count() == 1
    assert verify_chain().ok


def test_committing_progress_resets_the_crash_counter(submitted_run, settings):
    settings.RUN_MAX_CLAIMS = 1
    services.run_advance(run_id=str(submitted_run.pk), worker="w1")
    run = Run.objects.get(pk=submitted_run.pk)
    assert run.status == Run.Status.SUCCEEDED and run.claims_since_progress == 0


def test_workers_with_long_host_names_can_take_runs(submitted_run):
    services.run_advance(
        run_id=str(submitted_run.pk), worker="celery@ip-10-0-12-34.eu-west-1.compute.internal:12345"
    )
    assert Run.objects.get(pk=submitted_run.pk).status == Run.Status.SUCCEEDED


def test_a_steps_time_limit_covers_every_call_it_may_make():
    from runs.engine.released import ReleasedWorkflow

    released = ReleasedWorkflow(
        release_id="rel_x",
        definition={"steps": []},
        artifacts={
            "model_config": {
                "remote": {
                    "provider": "openai_compatible",
                    "model": "m",
                    "timeout_s": 40,
                    "fallback": ["local"],
                },
                "local": {"provider": "openai_compatible", "model": "m"},  # the provider's 30 s
                "rules": {"provider": "builtin", "model": "rules"},
            }
        },
        agents={"triager": {"model_config": "remote"}},
        policy=None,
    )
    # The chain in turn, then one repair of the first config's reply.
    assert released.step_time_limit({"name": "triage", "agent": "triager"}) == 40 + 30 + 40
    assert released.step_time_limit({"name": "t", "agent": "triager", "model_config": "rules"}) == 0
    # A call and its reconcile lookup.
    assert released.step_time_limit({"name": "write", "tool": "crm.update", "timeout_s": 3}) == 6
    assert released.step_time_limit({"name": "write", "tool": "crm.update"}) == 20
    assert released.step_time_limit({"name": "gate", "human_if": ["amount > 100"]}) == 0
