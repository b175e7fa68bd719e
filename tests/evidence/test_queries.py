"""Evidence reads: a constant number of queries whatever the runs recorded, by index."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import ApprovalDecision
from controlplane.audit import record
from evidence.collect import Scope, run_evidence
from evidence.models import AuditCheckpoint, EvidenceExport
from evidence.services import audit_checkpoint
from policy.models import PolicyDecision
from registry.models import Release
from runs.models import Effect, PendingAction, Run
from tests.factories import RunFactory, UserFactory
from tests.support.query_plans import plans_reading, postgresql_only

pytestmark = pytest.mark.django_db


def decision(point: str, trace_id: str, run_id: str) -> PolicyDecision:
    """An allowed decision of the log, not saved yet."""
    return PolicyDecision(
        decision_point=point,
        input_version=1,
        input={},
        input_digest="0" * 64,
        bundle_name="default",
        bundle_digest="b" * 64,
        engine="embedded",
        allow=True,
        require_approval=point == "tool.call",
        latency_us=100,
        trace_id=trace_id,
        run_id=run_id,
    )


def recorded_run(release: Release) -> Run:
    """A run of `release` with what its evidence answers from: its `run.start` decision (taken
    before the run, so without its id) and a step's, a request approved by a reviewer of its
    own, an effect and its audit events."""
    run = RunFactory(release_id=release.pk, status=Run.Status.SUCCEEDED)
    decision("run.start", run.trace_id, "").save()
    decision("tool.call", run.trace_id, str(run.pk)).save()
    request = PendingAction.objects.create(
        run=run,
        state="commit",
        status="approved",
        proposed_action={"tool": "crm.update_case"},
        action_hash="a",
    )
    ApprovalDecision.objects.create(
        pending_action=request,
        reviewer=UserFactory(),
        decision="approve",
        approver_group="reviewer",
        action_hash="a",
    )
    Effect.objects.create(
        run=run, state="commit", tool="crm.update_case", idempotency_key=run.pk.hex, args={}
    )
    record("system:tests", "run.created", run, run_id=run.pk, release_id=release.pk)
    record("system:tests", "run.approved", run, {"reason": "fine"}, run_id=run.pk, release_id=release.pk)
    return run


def test_collecting_evidence_keeps_its_query_count_whatever_each_run_recorded(demo_registry):
    release = Release.objects.get(pk=demo_registry.releases[0])
    scope = Scope(since=timezone.now() - timedelta(hours=1))

    def collected() -> tuple[int, list[dict]]:
        with CaptureQueriesContext(connection) as queries:
            evidence = list(run_evidence(scope.runs()))
        return len(queries), evidence

    for _ in range(2):
        recorded_run(release)
    few, _ = collected()
    for _ in range(10):
        recorded_run(release)
    many, evidence = collected()

    assert many == few
    assert len(evidence) == 12
    for entry in evidence:
        assert [d["decision_point"] for d in entry["policy"]["decisions"]] == ["run.start", "tool.call"]
        assert (
            len(entry["approvals"]["requests"][0]["reviews"]) == 1 and len(entry["effects"]["effects"]) == 1
        )
        assert entry["release"]["manifest_digest"] == release.digest


@postgresql_only
def test_the_runs_policy_decisions_are_read_by_index(demo_registry):
    release = Release.objects.get(pk=demo_registry.releases[0])
    for _ in range(3):
        recorded_run(release)
    # The log holds the run.start of every run ever started: those of the scope are a few.
    PolicyDecision.objects.bulk_create(decision("run.start", f"{n:032x}", "") for n in range(3000))
    scope = Scope(release_id=release.pk)

    plans = plans_reading("policy_policydecision", lambda: list(run_evidence(scope.runs())))

    # A run's decisions by its id, its `run.start` (taken before the run had one) by its trace.
    assert len(plans) == 1, plans
    assert "decision_run_idx" in plans[0] and "decision_runless_trace_idx" in plans[0], plans[0]


def test_the_evidence_page_and_its_exports_keep_their_query_count(signed_in, auditor):
    client = signed_in(auditor)
    run = RunFactory()
    record("system:tests", "run.created", run, run_id=run.pk)
    checkpoint = audit_checkpoint(reason=AuditCheckpoint.Reason.EXPORT)

    def exported(n: int) -> None:
        for status in ["ready", "running"] * n:
            EvidenceExport.objects.create(
                scope={"run": str(run.pk)},
                format="json",
                status=status,
                checkpoint=checkpoint,
                created_by="user:auditor",
                runs_total=1,
                requested_by=auditor,
            )

    def counts() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as home:
            assert client.get("/evidence/").status_code == 200
        with CaptureQueriesContext(connection) as listed:
            assert client.get("/evidence/exports/list").status_code == 200
        return len(home), len(listed)

    exported(1)
    few = counts()
    exported(3)
    many = counts()

    assert many == few
    assert client.get("/evidence/exports/list").content.decode().count("<tr>") == 1 + 8  # the head
