"""Approval decisions through the services, on the demo support workflow run in process."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, transaction
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext

from approvals import selectors, services
from approvals.models import ApprovalDecision
from approvals.tasks import escalate_due_approvals
from controlplane.audit import verify_chain
from controlplane.errors import Conflict, Forbidden, InvalidInput, NotFound
from controlplane.identity import ADMIN, AUDITOR, REVIEWER, actor_for, user_roles
from controlplane.models import AuditEvent
from policy.models import PolicyDecision
from registry.models import Agent
from registry.services.bundles import bundle_apply
from runs import services as run_services
from runs.models import Effect, PendingAction, Run, StepCheckpoint

from .scenarios import HIGH_VALUE_REFUND, LARGE_REFUND, SMALL_REFUND, advance, clear, pending_of

pytestmark = pytest.mark.django_db


def decide(pending, user, decision="approve", reason="checked the refund"):
    return services.approval_decide(pending_action_id=pending.pk, decision=decision, reason=reason, user=user)


def actions(pending) -> list[str]:
    return list(
        AuditEvent.objects.filter(object_type="runs.pendingaction", object_id=str(pending.pk))
        .order_by("seq")
        .values_list("action", flat=True)
    )


def test_a_parked_run_opens_a_request_for_the_reviewer_group_with_a_due_time(parked, requester):
    pending = parked()
    assert pending.state == "commit" and pending.proposed_action["tool"] == "crm.update_case"
    assert pending.approver_group == "reviewer" and pending.approvers == ["reviewer"]
    assert pending.workflow == "support_case_resolution" and pending.requested_by == requester
    assert pending.risk_rank == PendingAction.Risk.HIGH  # an irreversible tool
    assert pending.sensitivity == "internal"
    assert timedelta(hours=23) < pending.due_at - pending.created_at < timedelta(hours=24, seconds=1)
    assert actions(pending) == ["approval.requested"]


def test_an_approval_resumes_the_run_which_carries_out_the_approved_action(parked, reviewer):
    pending = parked()
    recorded = decide(pending, reviewer)
    assert recorded.action_hash == pending.action_hash and recorded.approver_group == "reviewer"
    assert recorded.pending_action.status == PendingAction.Status.APPROVED
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.APPROVED and pending.decided_at is not None
    run = Run.objects.get(pk=pending.run_id)
    assert run.status == Run.Status.QUEUED
    assert advance(run).status == Run.Status.SUCCEEDED
    assert actions(pending) == ["approval.requested", "approval.decided"]
    logged = PolicyDecision.objects.get(pk=recorded.policy_decision_id)
    assert logged.decision_point == "approval.decide" and logged.allow
    assert logged.input["reviewer"]["username"] == "reviewer"
    assert logged.input["request"]["agent"] == "case_manager"
    assert verify_chain().ok


def test_the_resumed_call_logs_its_decision_checks_the_approval_and_writes_ahead_at_once(parked, reviewer):
    """On PostgreSQL one statement, before the tool is called; elsewhere three."""
    pending = parked()
    decide(pending, reviewer)
    run = Run.objects.get(pk=pending.run_id)
    with CaptureQueriesContext(connection) as queries:
        assert advance(run).status == Run.Status.SUCCEEDED
    statements = [query["sql"] for query in queries.captured_queries]
    first_of_the_tool = next(n for n, sql in enumerate(statements) if "sandbox_" in sql)
    before_the_call = statements[:first_of_the_tool]
    separate = [
        sql
        for sql in before_the_call
        if sql.startswith(('INSERT INTO "policy_policydecision"', 'INSERT INTO "runs_effect"'))
        or sql.startswith('SELECT 1 AS "a" FROM "runs_pendingaction"')
    ]
    if connection.vendor == "postgresql":
        assert [sql for sql in before_the_call if "WITH decision AS" in sql] != [] and separate == []
    else:
        assert len(separate) == 3, separate
    effect = Effect.objects.get(run=run, state="commit")
    assert effect.status == Effect.Status.COMMITTED and effect.tool == "crm.update_case"
    assert effect.compensation_tool == "crm.reopen_case"
    called = PolicyDecision.objects.get(
        run_id=str(run.pk),
        decision_point="tool.call",
        allow=True,
        input__tool__name="crm.update_case",
        require_approval=True,
        pk__gt=pending.policy_decision_id,
    )
    step = StepCheckpoint.objects.get(run=run, state="commit")
    assert step.details["policy_decision"] == called.pk and step.details["effect"] == effect.pk
    assert verify_chain().ok


def test_a_rejection_needs_a_reason_and_ends_the_run_as_its_step_says(parked, reviewer):
    pending = parked()
    with pytest.raises(InvalidInput, match="needs a reason"):
        decide(pending, reviewer, "reject", reason="  ")
    with pytest.raises(InvalidInput, match="approve' or 'reject"):
        decide(pending, reviewer, "maybe")
    assert not ApprovalDecision.objects.exists()
    decide(pending, reviewer, "reject", reason="the customer already got a voucher")
    run = Run.objects.get(pk=pending.run_id)
    assert run.status == Run.Status.REJECTED  # the commit step has no on_reject: the run ends
    assert AuditEvent.objects.filter(action="run.rejected", run_id=str(run.pk)).exists()


def test_a_rejected_gate_follows_on_reject(parked, reviewer):
    gate = parked(LARGE_REFUND)
    assert gate.state == "approve" and gate.risk_rank == PendingAction.Risk.MEDIUM
    decide(gate, reviewer, "reject", reason="over the limit")
    assert Run.objects.get(pk=gate.run_id).status == Run.Status.REJECTED  # on_reject: end


def test_the_requester_can_never_decide_their_own_request(parked, requester):
    requester.groups.add(Group.objects.get(name=REVIEWER))
    pending = parked()
    assert pending not in selectors.pending_for(requester)
    with pytest.raises(Forbidden, match="requester cannot approve their own request"):
        decide(pending, requester)
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.PENDING and not ApprovalDecision.objects.exists()
    # The refusal is evidence too: logged by policy and in the ledger.
    assert PolicyDecision.objects.filter(decision_point="approval.decide", allow=False).count() == 1
    assert actions(pending)[-1] == "approval.refused"


def test_the_agent_identity_can_never_decide(parked, demo_registry):
    agent_user = Agent.objects.get(slug="case_manager").service_user
    agent_user.groups.add(Group.objects.get(name=REVIEWER))
    pending = parked()
    with pytest.raises(Forbidden, match="agent"):
        decide(pending, agent_user)
    assert selectors.pending_count_for(agent_user) == 0


def test_an_approval_that_resumes_the_run_reads_and_writes_each_row_once(parked, reviewer):
    pending = parked()
    with CaptureQueriesContext(connection) as queries:
        recorded = decide(pending, reviewer)
    statements = [query["sql"] for query in queries.captured_queries]
    # One transaction (a savepoint inside the test's): the run's part takes none of its own.
    savepoints = [n for n, sql in enumerate(statements) if sql.startswith("SAVEPOINT")]
    assert len(savepoints) == 1
    if connection.vendor == "postgresql":
        # The request read under its lock, then everything the approval writes: two statements.
        in_transaction = statements[savepoints[0] + 1 : -1]
        assert len(in_transaction) == 2, [sql[:80] for sql in in_transaction]
        assert "FOR UPDATE OF p" in in_transaction[0] and "baton_audit_append" in in_transaction[1]
    else:
        assert len([sql for sql in statements if sql.startswith('SELECT "runs_pendingaction"')]) == 1
        assert len([sql for sql in statements if sql.startswith('UPDATE "runs_pendingaction"')]) == 1
        assert len([sql for sql in statements if sql.startswith('UPDATE "runs_run"')]) == 1
    run = Run.objects.get(pk=pending.run_id)
    assert run.status == Run.Status.QUEUED and run.lease_owner == "" and run.lease_expires_at is not None
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.APPROVED and pending.approvals == 1
    assert pending.decided_at is not None
    logged = PolicyDecision.objects.filter(decision_point="approval.decide").get()
    assert logged.allow and logged.actor == "user:reviewer" and logged.run_id == str(run.pk)
    assert logged.input["reviewer"]["username"] == "reviewer"
    assert ApprovalDecision.objects.get() == recorded
    assert (recorded.policy_decision_id, recorded.action_hash) == (logged.pk, pending.action_hash)
    assert (recorded.reviewer, recorded.approver_group, recorded.reason) == (
        reviewer,
        "reviewer",
        "checked the refund",
    )
    decided, approved = AuditEvent.objects.filter(run_id=str(run.pk)).order_by("seq").reverse()[:2][::-1]
    assert (decided.action, approved.action) == ("approval.decided", "run.approved")
    assert decided.payload["policy_decision"] == logged.pk and decided.payload["approvals"] == 1
    assert approved.payload["pending_action"] == pending.pk and decided.seq + 1 == approved.seq
    assert verify_chain().ok


def test_an_approval_for_a_run_that_stopped_waiting_writes_nothing(parked, reviewer):
    pending = parked()
    Run.objects.filter(pk=pending.run_id).update(status=Run.Status.CANCELLED)
    events = AuditEvent.objects.count()
    with pytest.raises(Conflict, match="no longer waits"):
        decide(pending, reviewer)
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.PENDING and pending.approvals == 0
    assert not ApprovalDecision.objects.exists() and AuditEvent.objects.count() == events
    assert not PolicyDecision.objects.filter(decision_point="approval.decide").exists()


def test_a_reviewer_outside_the_approver_group_is_refused(parked, platform_user):
    pending = parked()
    assert selectors.pending_count_for(platform_user) == 0
    with pytest.raises(Forbidden, match="not in the approver group reviewer"):
        decide(pending, platform_user)


def test_clearance_must_cover_the_requests_data(parked, reviewer):
    pending = parked(sensitivity="confidential")
    assert pending.sensitivity == "confidential"
    assert selectors.pending_count_for(reviewer) == 0  # cleared for internal data by default
    with pytest.raises(Forbidden, match="cleared for internal data"):
        decide(pending, reviewer)
    clear(reviewer, "confidential")
    assert list(selectors.pending_for(reviewer)) == [pending]
    decide(pending, reviewer)


def test_high_value_needs_a_reviewer_then_the_platform_group_two_distinct_people(
    parked, reviewer, reviewer2, platform_user
):
    gate = parked(HIGH_VALUE_REFUND)
    decide(gate, reviewer)
    pending = pending_of(advance(Run.objects.get(pk=gate.run_id)))
    assert pending.state == "commit" and pending.quorum == 2
    assert pending.approvers == ["reviewer", "platform"]  # lower in the escalation chain first
    assert pending.approver_group == "reviewer"

    decide(pending, reviewer)
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.PENDING and pending.approvals == 1
    assert pending.approver_group == "platform" and pending.stage == 1
    assert selectors.pending_count_for(reviewer2) == 0 and selectors.pending_count_for(platform_user) == 1
    with pytest.raises(Conflict, match="already decided"):
        decide(pending, reviewer)
    assert Run.objects.get(pk=pending.run_id).status == Run.Status.WAITING_APPROVAL

    decide(pending, platform_user)
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.APPROVED and pending.approvals == 2
    assert set(pending.decisions.values_list("reviewer__username", flat=True)) == {"reviewer", "platform"}
    assert advance(Run.objects.get(pk=pending.run_id)).status == Run.Status.SUCCEEDED


def test_quorum_in_one_group_needs_distinct_reviewers(parked, reviewer, reviewer2):
    pending = parked()
    PendingAction.objects.filter(pk=pending.pk).update(quorum=2)
    decide(pending, reviewer)
    with pytest.raises(Conflict, match="already decided"):
        decide(pending, reviewer)
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.PENDING and pending.approvals == 1
    decide(pending, reviewer2)
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.APPROVED


def test_a_decided_request_refuses_further_decisions(parked, reviewer, reviewer2):
    pending = parked()
    decide(pending, reviewer)
    with pytest.raises(Conflict, match="already approved"):
        decide(pending, reviewer2, "reject", reason="too late")
    with pytest.raises(NotFound):
        services.approval_decide(pending_action_id=999999, decision="approve", reason="", user=reviewer)


def test_an_approval_binds_to_the_exact_action_a_changed_one_needs_a_new_request(parked, reviewer, reviewer2):
    first = parked()
    decide(first, reviewer)
    # Before the run resumes, what the action is built from changes (a repaired payload).
    draft = StepCheckpoint.objects.get(run_id=first.run_id, state="draft")
    StepCheckpoint.objects.filter(pk=draft.pk).update(output={**draft.output, "reply": "A different reply"})
    run = advance(Run.objects.get(pk=first.run_id))
    assert run.status == Run.Status.WAITING_APPROVAL  # the approved action is not carried out
    first.refresh_from_db()
    second = pending_of(run)
    assert first.status == PendingAction.Status.SUPERSEDED
    assert second.action_hash != first.action_hash
    assert second.proposed_action["args"]["resolution"] == "A different reply"
    assert "approval.superseded" in actions(first)
    opened = AuditEvent.objects.get(action="approval.requested", object_id=str(second.pk))
    assert opened.payload["replaces"] == [first.pk]
    with pytest.raises(Conflict, match="superseded"):
        decide(first, reviewer2)
    decide(second, reviewer2)
    assert advance(run).status == Run.Status.SUCCEEDED


def test_overdue_requests_escalate_along_the_chain_then_expire(parked, reviewer, platform_user, admin_user):
    pending = parked()
    PendingAction.objects.filter(pk=pending.pk).update(due_at=Now() - timedelta(seconds=1))
    assert services.approvals_escalate_due() == 1
    pending.refresh_from_db()
    assert pending.approver_group == "platform" and pending.escalations == 1
    assert pending.status == PendingAction.Status.PENDING
    assert selectors.pending_count_for(reviewer) == 0 and selectors.pending_count_for(platform_user) == 1
    assert services.approvals_escalate_due() == 0  # not due again yet

    PendingAction.objects.filter(pk=pending.pk).update(due_at=Now() - timedelta(seconds=1))
    services.approvals_escalate_due()
    pending.refresh_from_db()
    assert pending.approver_group == "admin" and selectors.pending_count_for(admin_user) == 1

    PendingAction.objects.filter(pk=pending.pk).update(due_at=Now() - timedelta(seconds=1))
    services.approvals_escalate_due()
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.EXPIRED  # the chain ends at admin
    assert Run.objects.get(pk=pending.run_id).status == Run.Status.REJECTED
    assert actions(pending) == [
        "approval.requested",
        "approval.escalated",
        "approval.escalated",
        "approval.expired",
    ]
    with pytest.raises(Conflict, match="already expired"):
        decide(pending, admin_user)


@pytest.fixture
def expiring_registry(platform_user, support_bundle):
    """The support workflow whose approval gate gives reviewers a minute and then fails the run."""
    workflow = support_bundle["workflows"]["support_case_resolution"]
    support_bundle["workflows"]["support_case_resolution"] = workflow.replace(
        "on_reject: end}", "on_reject: end, approval_timeout_s: 60, on_expire: fail}"
    )
    return bundle_apply(bundle=support_bundle, author=platform_user, actor=actor_for(platform_user))


def test_a_step_may_set_its_due_time_and_fail_the_run_on_expiry(expiring_registry, requester):
    run = run_services.task_submit(
        requester=requester,
        actor=actor_for(requester),
        workflow="support_case_resolution",
        case_id="CASE-9",
        input=LARGE_REFUND,
        channel="staging",
    ).run
    gate = pending_of(advance(run))
    assert gate.state == "approve"
    assert timedelta(seconds=59) < gate.due_at - gate.created_at < timedelta(seconds=61)
    PendingAction.objects.filter(pk=gate.pk).update(due_at=Now() - timedelta(seconds=1))
    services.approvals_escalate_due()
    gate.refresh_from_db()
    assert gate.status == PendingAction.Status.EXPIRED
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED and "expired" in run.error


def test_history_shows_closed_requests_of_the_reviewers_groups_and_everything_to_auditors(
    parked, reviewer, reviewer2, auditor, platform_user
):
    approved = parked()
    decide(approved, reviewer)
    waiting = parked(case_id="CASE-2")
    assert list(selectors.history_for(reviewer2)) == [approved]
    assert list(selectors.history_for(auditor)) == [approved]
    assert list(selectors.history_for(platform_user)) == []
    assert selectors.request_for(auditor, waiting.pk) == waiting
    with pytest.raises(NotFound):
        selectors.request_for(platform_user, waiting.pk)


def test_one_request_read_is_visible_exactly_when_the_list_shows_it(
    parked, requester, reviewer, reviewer2, platform_user, auditor, admin_user, outsider
):
    requests = [parked(), parked(sensitivity="confidential", case_id="CASE-2"), parked(case_id="CASE-3")]
    decide(requests[2], reviewer2)
    reviewer2.groups.clear()  # it still sees the request it decided, and no other
    requester.groups.add(Group.objects.get(name=REVIEWER))  # never its own requests
    for user in (requester, reviewer, reviewer2, platform_user, auditor, admin_user, outsider):
        fresh = type(user).objects.get(pk=user.pk)
        listed = set(selectors.requests_visible_to(fresh).values_list("pk", flat=True))
        for pending in requests:
            decided_it = ApprovalDecision.objects.filter(pending_action=pending, reviewer=fresh).exists()
            visible = selectors.request_visible_to(
                fresh, selectors.reviewer_read(fresh), pending, decided_it=decided_it
            )
            assert visible == (pending.pk in listed), (user.username, pending.pk)


def test_the_navigation_count_is_one_query(parked, reviewer, django_assert_num_queries):
    parked()
    fresh = type(reviewer).objects.get(pk=reviewer.pk)  # nothing cached on the user
    with django_assert_num_queries(1):
        assert selectors.pending_count_for(fresh) == 1


def test_the_reviewers_groups_answer_the_role_checks_in_the_same_query(
    reviewer, auditor, django_user_model, django_assert_num_queries
):
    superuser = django_user_model.objects.create_superuser("root", "root@example.org", "pw-for-tests-only")
    reviewer.groups.add(Group.objects.create(name="stewards"))
    for user, roles in ((reviewer, {REVIEWER}), (auditor, {AUDITOR}), (superuser, {ADMIN})):
        fresh = type(user).objects.get(pk=user.pk)  # nothing cached on the user
        with django_assert_num_queries(1):
            selectors.reviewer_of(fresh)
            assert user_roles(fresh) == roles
    assert selectors.reviewer_of(fresh).groups == [ADMIN]


def test_a_superuser_decides_for_the_admin_group_once_escalated(parked, django_user_model):
    superuser = django_user_model.objects.create_superuser("root", "root@example.org", "pw-for-tests-only")
    pending = parked()
    assert selectors.pending_count_for(superuser) == 0
    PendingAction.objects.filter(pk=pending.pk).update(approver_group="admin")
    assert selectors.pending_count_for(superuser) == 1
    assert list(selectors.pending_for(superuser)) == [pending]
    decide(pending, superuser)
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.APPROVED


def test_the_beat_task_escalates_overdue_requests(parked, settings):
    schedule = settings.CELERY_BEAT_SCHEDULE["escalate-due-approvals"]
    assert schedule["task"] == escalate_due_approvals.name
    pending = parked()
    assert escalate_due_approvals() == 0
    PendingAction.objects.filter(pk=pending.pk).update(due_at=Now() - timedelta(seconds=1))
    assert escalate_due_approvals() == 1
    pending.refresh_from_db()
    assert pending.approver_group == "platform"


def test_decisions_are_append_only_in_the_database(parked, reviewer):
    recorded = decide(parked(), reviewer)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        ApprovalDecision.objects.filter(pk=recorded.pk).update(reason="edited afterwards")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        ApprovalDecision.objects.filter(pk=recorded.pk).delete()


@pytest.fixture
def confirming_registry(platform_user, support_bundle):
    """The support workflow with a last gate after the irreversible commit that fails the run
    when rejected: the committed case update must then be undone."""
    workflow = support_bundle["workflows"]["support_case_resolution"]
    commit_end = workflow.index('refund_amount: "=refund_amount"}}') + len(
        'refund_amount: "=refund_amount"}}'
    )
    support_bundle["workflows"]["support_case_resolution"] = (
        workflow[:commit_end]
        + '\n  - confirm:  {human_if: ["refund_amount > 0"], on_reject: fail}'
        + workflow[commit_end:]
    )
    return bundle_apply(bundle=support_bundle, author=platform_user, actor=actor_for(platform_user))


def test_a_rejection_that_fails_the_run_compensates_what_it_committed(
    confirming_registry, requester, reviewer
):
    run = run_services.task_submit(
        requester=requester,
        actor=actor_for(requester),
        workflow="support_case_resolution",
        case_id="CASE-1001",
        input=SMALL_REFUND,
        channel="staging",
    ).run
    decide(pending_of(advance(run)), reviewer)  # the irreversible commit
    confirm = pending_of(advance(run))
    assert confirm.state == "confirm"
    assert Effect.objects.get(run=run).status == Effect.Status.COMMITTED

    decide(confirm, reviewer, "reject", reason="the customer withdrew the claim")
    run.refresh_from_db()
    assert run.status == Run.Status.COMPENSATING and "rejected" in run.error
    run = advance(run)
    assert run.status == Run.Status.COMPENSATED
    assert Effect.objects.get(run=run).status == Effect.Status.COMPENSATED
