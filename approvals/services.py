"""Approval use cases: open a request when a run parks, record reviewers' decisions (quorum,
separation of duties, clearance, all asked of policy `approval.decide`), escalate or expire
requests past their due time. Every change is audited in its own transaction and notified
once that transaction commits.

A request names the groups that must sign (`approvers`, from the policy decision that parked
the run) and a quorum. The groups sign in turn, lowest in the escalation chain first (a
high-value refund: a reviewer, then the platform group); the request is approved once every
group has signed and `quorum` distinct people have approved. One rejection rejects it.
"""

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import BigIntegerField, Exists, OuterRef, Value
from django.db.models.functions import Now
from django.db.models.signals import post_save

from controlplane.audit import Entry, ObjectRef, append_argument, ledger_lock_condition, record, record_many
from controlplane.dbtime import database_now_plus
from controlplane.errors import Conflict, Forbidden, InvalidInput, NotFound
from controlplane.identity import AGENT_USERNAME_PREFIX, Actor, actor_for
from controlplane.models import ApiKey, AuditEvent
from policy.bundles import PolicyBundle, governance_bundle
from policy.services import Decision, decision_input, decision_row, policy_evaluate, policy_record
from runs.engine.released import released_workflow
from runs.models import PendingAction, Run
from runs.services.decisions import pending_action_expire, pending_action_settle, run_decided_entry
from runs.services.queue import enqueue_on_commit

from . import decision_sql
from .models import ApprovalDecision, ReviewerClearance
from .notifiers import notify_on_commit
from .selectors import Reviewer, agent_key_issuer_id, request_visible_to, reviewer_read

SYSTEM = Actor("approvals", kind="system")
DECIDE_SCOPE = "approvals:decide"
PENDING_ACTION_TYPE = PendingAction._meta.label_lower
REASON_MAX = 2000
ON_EXPIRE_ESCALATE, ON_EXPIRE_FAIL = "escalate", "fail"  # or "reject"
# When the policy bundle names no escalation chain: reviewers, then platform, then admins.
DEFAULT_ESCALATION = {"reviewer": "platform", "platform": "admin"}


def approval_request_open(*, pending: PendingAction) -> PendingAction:
    """Set up a request the run engine has just created, in the engine's transaction: the
    order in which its groups sign, its due time, and the audit event; requests it replaced
    (the proposed action changed) are closed in the ledger too."""
    run = pending.run
    chain = escalation_chain(run)
    stages = _signing_order(pending.approvers or [settings.APPROVAL_DEFAULT_GROUP], chain)
    PendingAction.objects.filter(pk=pending.pk).update(
        approvers=stages,
        approver_group=stages[0],
        due_at=database_now_plus(_due_seconds(run, pending.state)),
    )
    pending.refresh_from_db(fields=["approvers", "approver_group", "due_at"])
    superseded = [
        str(pk)
        for pk in PendingAction.objects.filter(
            run=run, state=pending.state, status=PendingAction.Status.SUPERSEDED
        ).values_list("pk", flat=True)
    ]
    # The engine has just superseded the earlier request(s) of this step whose action differs;
    # those already recorded as superseded were replaced before.
    recorded_before = set(
        AuditEvent.objects.filter(
            object_type=PENDING_ACTION_TYPE, object_id__in=superseded, action="approval.superseded"
        ).values_list("object_id", flat=True)
    )
    replaced = [int(pk) for pk in superseded if pk not in recorded_before]
    if replaced:
        PendingAction.objects.filter(pk__in=replaced, decided_at__isnull=True).update(decided_at=Now())
    for old in replaced:
        record(
            SYSTEM,
            "approval.superseded",
            ObjectRef(PENDING_ACTION_TYPE, str(old)),
            {"replaced_by": pending.pk, "action_hash": pending.action_hash},
            **_audit_ids(run),
        )
    record(
        SYSTEM,
        "approval.requested",
        pending,
        {
            "state": pending.state,
            "action_hash": pending.action_hash,
            "approvers": stages,
            "quorum": pending.quorum,
            "approver_group": pending.approver_group,
            "due_at": pending.due_at.isoformat(),
            "replaces": replaced,
        },
        **_audit_ids(run),
    )
    notify_on_commit("created", pending)
    return pending


def approval_decide(
    *,
    pending_action_id: int,
    decision: str,
    reason: str,
    user: AbstractBaseUser,
    api_key: ApiKey | None = None,
    visible_only: bool = False,
    reviewer: Reviewer | None = None,
) -> ApprovalDecision:
    """Record `user`'s decision ("approve" or "reject"; a rejection needs a reason) on one
    pending request, bound to the exact action it proposes, and return it.

    Policy `approval.decide` is asked every time (separation of duties, approver group,
    clearance); a refusal is logged and raised as Forbidden with the policy's reasons. The
    request's row lock makes concurrent decisions take turns: exactly one closes a request,
    later ones get Conflict, as do decisions on a request already decided, expired or
    superseded, and a second decision by the same reviewer. When the last required approval
    arrives (or on any rejection) the run resumes or follows its rejection path, in the same
    transaction. `visible_only`: NotFound, too, for a request the user may not see
    (`selectors.requests_visible_to`). `reviewer`: the user's groups and clearance as the
    caller read them for this request (`selectors.reviewer_of`), else read now.
    Raises InvalidInput, Forbidden, Conflict, NotFound.
    """
    verdict = decision
    if verdict not in ApprovalDecision.Verdict.values:
        raise InvalidInput("The decision must be 'approve' or 'reject'.", errors={"decision": ["Unknown."]})
    reason = (reason or "").strip()
    if verdict == ApprovalDecision.Verdict.REJECT and not reason:
        raise InvalidInput("A rejection needs a reason.", errors={"reason": ["Required when rejecting."]})
    if len(reason) > REASON_MAX:
        raise InvalidInput(f"The reason is over {REASON_MAX} characters.", errors={"reason": ["Too long."]})
    reviewer = reviewer or reviewer_read(user)
    actor = actor_for(user, api_key)
    if actor.kind == "agent":
        raise Forbidden("An agent's identity can never decide an approval request.")
    if api_key is not None and DECIDE_SCOPE not in api_key.scopes:
        raise Forbidden(f"This API key lacks the scope '{DECIDE_SCOPE}'.")
    recorded, refusal = _decide_under_lock(
        pending_action_id, verdict, reason, user, reviewer, actor, visible_only
    )
    if recorded is None:
        raise Forbidden("This decision is refused: " + "; ".join(refusal) + ".")
    return recorded


@transaction.atomic
def _decide_under_lock(
    pending_action_id: int,
    verdict: str,
    reason: str,
    user: AbstractBaseUser,
    reviewer: Reviewer,
    actor: Actor,
    visible_only: bool,
) -> tuple[ApprovalDecision | None, list[str]]:
    pending = _locked_request(pending_action_id, user)
    if visible_only and not request_visible_to(user, reviewer, pending, decided_it=pending.decided_before):
        raise NotFound("No such approval request.")
    if pending.status != PendingAction.Status.PENDING:
        raise Conflict(f"This request was already {pending.status}; your decision was not recorded.")
    if pending.decided_before:
        raise Conflict("You have already decided this request; another reviewer must decide next.")
    run = pending.run
    document = decision_input(
        "approval.decide",
        reviewer={
            "username": user.get_username(),
            "groups": reviewer.groups,
            "clearance": ReviewerClearance.Level(reviewer.clearance).label,
        },
        request={
            "requested_by": pending.requested_by.get_username() if pending.requested_by_id else "",
            "agent": acting_agent(run, pending.state),
            "approver_group": pending.approver_group,
            "sensitivity": run.sensitivity,
        },
        decision=verdict,
    )
    bundle = policy_bundle_of(run)
    decision = policy_evaluate("approval.decide", document, bundle=bundle)
    logged_as = {"bundle": bundle, "actor": actor, "trace_id": run.trace_id, "run_id": run.pk}
    approve = verdict == ApprovalDecision.Verdict.APPROVE
    asked_for_it = _asked_for_it(pending, user, verdict)
    allowed = decision.allow and not asked_for_it
    if allowed and approve and _resumes_run(pending) and pending.log_id is not None:
        return _approve_and_resume(pending, user, reason, actor, document, decision, logged_as), []
    decision = policy_record("approval.decide", document, decision, **logged_as)
    if not allowed:
        refusal = asked_for_it if decision.allow else decision.reasons
        # The refusal is kept (decision log and ledger) although nothing else changes.
        record(
            actor,
            "approval.refused",
            pending,
            {"decision": verdict, "reasons": refusal, "policy_decision": decision.decision_id},
            **_audit_ids(run),
        )
        return None, refusal
    recorded = _decision_of(pending, user, verdict, reason, actor, decision.decision_id)
    recorded.save(force_insert=True)
    decided = _decided_entry(pending, actor, verdict, reason, decision.decision_id)
    if not approve:
        # The run follows its rejection path; the decision is appended with the run's event.
        pending_action_settle(
            pending=pending, run=run, approved=False, actor=actor, reason=reason, audit_first=[decided]
        )
        notify_on_commit("decided", pending, decision=recorded)
        return recorded, []
    pending.approvals += 1
    if pending.stage + 1 < len(pending.approvers):
        # This group has signed; the next one in the signing order decides now.
        pending.stage += 1
        pending.escalations = 0
        pending.approver_group = pending.approvers[pending.stage]
        _save_and_lock_ledger(
            pending,
            approvals=pending.approvals,
            stage=pending.stage,
            escalations=0,
            approver_group=pending.approver_group,
            due_at=database_now_plus(_due_seconds(run, pending.state)),
        )
        pending.refresh_from_db(fields=["due_at"])
        advanced = Entry(
            SYSTEM,
            "approval.advanced",
            pending,
            {"approver_group": pending.approver_group, "due_at": pending.due_at.isoformat()},
            **_audit_ids(run),
        )
        record_many([decided, advanced], ledger_locked=True)
        notify_on_commit("advanced", pending, decision=recorded)
    elif pending.approvals < pending.quorum:
        _save_and_lock_ledger(pending, approvals=pending.approvals)
        record_many([decided], ledger_locked=True)
        notify_on_commit("advanced", pending, decision=recorded)
    else:
        # The run resumes; the count is written with the request's status, the decision
        # appended with the run's event.
        pending_action_settle(
            pending=pending,
            run=run,
            approved=True,
            actor=actor,
            reason=reason,
            audit_first=[decided],
            approvals=pending.approvals,
        )
        notify_on_commit("decided", pending, decision=recorded)
    return recorded, []


def _asked_for_it(pending: PendingAction, user: AbstractBaseUser, verdict: str) -> list[str]:
    """Why `user` asked for the run, in person or through an agent key they issued (so may not
    decide its requests, whatever the run's policy bundle allows); [] if they did not. Only a
    run asked for by an agent costs a look-up."""
    if pending.requested_by_id == user.pk:
        return [f"requester cannot {verdict} their own request"]
    requester = pending.requested_by.get_username() if pending.requested_by_id else ""
    if requester.startswith(AGENT_USERNAME_PREFIX) and agent_key_issuer_id(pending.run) == user.pk:
        return [f"{user.get_username()} issued the agent key that asked for this run and cannot {verdict} it"]
    return []


def _locked_request(pending_action_id: int, user: AbstractBaseUser) -> PendingAction:
    """The request under its row lock (only its row is locked) with its run and requester,
    `decided_before` (whether `user` decided it) and `log_id` (on PostgreSQL, the id reserved
    for the decision's log row; else None): one statement."""
    if connection.vendor == "postgresql":
        pending = decision_sql.locked_request(pending_action_id, user.pk)
    else:
        decided_before = ApprovalDecision.objects.filter(pending_action=OuterRef("pk"), reviewer=user)
        pending = (
            PendingAction.objects.select_for_update(of=("self",))
            .select_related("run", "requested_by")
            .annotate(
                decided_before=Exists(decided_before), log_id=Value(None, output_field=BigIntegerField())
            )
            .filter(pk=pending_action_id)
            .first()
        )
    if pending is None:
        raise NotFound("No such approval request.")
    return pending


def _resumes_run(pending: PendingAction) -> bool:
    """Whether one more approval closes the request and resumes its run (a handoff's ends it)."""
    return (
        pending.stage + 1 >= len(pending.approvers)
        and pending.approvals + 1 >= pending.quorum
        and "handoff" not in pending.proposed_action
    )


def _decided_entry(
    pending: PendingAction, actor: Actor, verdict: str, reason: str, policy_decision: int
) -> Entry:
    approve = verdict == ApprovalDecision.Verdict.APPROVE
    return Entry(
        actor,
        "approval.decided",
        pending,
        {
            "decision": verdict,
            "reason": reason,
            "approver_group": pending.approver_group,
            "action_hash": pending.action_hash,
            "policy_decision": policy_decision,
            "approvals": pending.approvals + approve,
            "quorum": pending.quorum,
        },
        **_audit_ids(pending.run),
    )


def _decision_of(
    pending: PendingAction,
    user: AbstractBaseUser,
    verdict: str,
    reason: str,
    actor: Actor,
    policy_decision: int,
) -> ApprovalDecision:
    """The reviewer's decision, bound to the action the request proposes (not yet saved)."""
    return ApprovalDecision(
        pending_action=pending,
        reviewer=user,
        decision=verdict,
        reason=reason,
        approver_group=pending.approver_group,
        action_hash=pending.action_hash,
        policy_decision_id=policy_decision,
        credential=actor.credential,
    )


def _approve_and_resume(
    pending: PendingAction,
    user: AbstractBaseUser,
    reason: str,
    actor: Actor,
    document: dict,
    decision: Decision,
    logged_as: dict,
) -> ApprovalDecision:
    """The approval that resumes the run, written in one statement (`decision_sql`): what the
    general path writes one statement at a time for it (see `pending_action_settle`)."""
    run, verdict = pending.run, ApprovalDecision.Verdict.APPROVE
    recorded = _decision_of(pending, user, verdict, reason, actor, pending.log_id)
    events = [
        _decided_entry(pending, actor, verdict, reason, pending.log_id),
        run_decided_entry(pending, run, True, actor, reason),
    ]
    written = decision_sql.approve_and_resume(
        pending=pending,
        log_row=decision_row("approval.decide", document, decision, **logged_as),
        decision=recorded,
        entries=append_argument(events),
    )
    if written.lease_expires_at is None:
        raise Conflict("The run no longer waits for this decision.")
    recorded.pk, recorded.created_at = written.decision_id, written.decision_created_at
    pending.status, pending.decided_at = PendingAction.Status.APPROVED, written.decided_at
    pending.approvals += 1
    run.status, run.lease_owner = Run.Status.QUEUED, ""
    run.lease_expires_at, run.updated_at = written.lease_expires_at, written.updated_at
    # Written by the statement, not by save(): its receivers hear of it as from a save.
    post_save.send(
        PendingAction,
        instance=pending,
        created=False,
        update_fields=frozenset({"status", "decided_at", "approvals"}),
        raw=False,
        using=connection.alias,
    )
    enqueue_on_commit(run.pk)
    notify_on_commit("decided", pending, decision=recorded)
    return recorded


def _save_and_lock_ledger(pending: PendingAction, **changes: Any) -> None:
    """Write the request's new counts, taking the audit ledger's lock in the same statement
    (the append that follows then needs no round trip for it)."""
    PendingAction.objects.filter(*ledger_lock_condition(), pk=pending.pk).update(**changes)


def approvals_escalate_due(*, limit: int = 500) -> int:
    """Escalate or expire the requests past their due time (the beat task); how many moved."""
    due = list(
        PendingAction.objects.filter(status=PendingAction.Status.PENDING, due_at__lte=Now())
        .order_by("due_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(approval_escalate(pending_action_id=pk) is not None for pk in due)


@transaction.atomic
def approval_escalate(*, pending_action_id: int) -> PendingAction | None:
    """Hand one overdue request to the next group of the escalation chain with a new due time,
    or, when the workflow says so or the chain ends, expire it: the run then follows its
    rejection path (`on_expire: reject`, and the chain's end) or fails (`on_expire: fail`).
    None when the request is no longer pending and overdue, or another transaction holds it."""
    pending = (
        PendingAction.objects.select_for_update(skip_locked=True)
        .filter(pk=pending_action_id, status=PendingAction.Status.PENDING, due_at__lte=Now())
        .first()
    )
    if pending is None:
        return None
    run = Run.objects.get(pk=pending.run_id)
    on_expire = _step(run, pending.state).get("on_expire", ON_EXPIRE_ESCALATE)
    chain = escalation_chain(run) if on_expire == ON_EXPIRE_ESCALATE else {}
    next_group = chain.get(pending.approver_group)
    if next_group:
        previous = pending.approver_group
        pending.approver_group, pending.escalations = next_group, pending.escalations + 1
        pending.due_at = database_now_plus(_due_seconds(run, pending.state))
        pending.save(update_fields=["approver_group", "escalations", "due_at"])
        pending.refresh_from_db(fields=["due_at"])
        record(
            SYSTEM,
            "approval.escalated",
            pending,
            {"from": previous, "to": next_group, "due_at": pending.due_at.isoformat()},
            **_audit_ids(run),
        )
        notify_on_commit("escalated", pending)
        return pending
    fail = on_expire == ON_EXPIRE_FAIL
    record(
        SYSTEM,
        "approval.expired",
        pending,
        {"approver_group": pending.approver_group, "on_expire": on_expire, "run_fails": fail},
        **_audit_ids(run),
    )
    pending_action_expire(pending_action_id=pending.pk, actor=SYSTEM, fail=fail)
    pending.status = PendingAction.Status.EXPIRED
    notify_on_commit("expired", pending)
    return pending


def policy_bundle_of(run: Run) -> PolicyBundle:
    """The policy pinned by the run's release governs its approvals; built-in workflows have
    no release and use the governance bundle."""
    if run.release_id:
        policy = released_workflow(run.release_id).policy
        if policy is not None:
            return policy
    return governance_bundle()


def escalation_chain(run: Run) -> dict[str, str]:
    """Group → the group a request goes to when it is overdue (`data.baton.approval.escalation`)."""
    approval = policy_bundle_of(run).data.get("baton", {}).get("approval", {})
    chain = approval.get("escalation", DEFAULT_ESCALATION)
    return chain if isinstance(chain, dict) else DEFAULT_ESCALATION


def acting_agent(run: Run, state: str) -> str:
    """The agent whose action waits (the step's, or the workflow's `run_as`); '' for none."""
    if not run.release_id:
        return ""
    released = released_workflow(run.release_id)
    step = released.step(state) if state in {s["name"] for s in released.definition["steps"]} else {}
    return step.get("agent") or released.definition.get("run_as") or ""


def _step(run: Run, state: str) -> dict:
    if not run.release_id:
        return {}
    released = released_workflow(run.release_id)
    return next((step for step in released.definition["steps"] if step["name"] == state), {})


def _due_seconds(run: Run, state: str) -> float:
    return _step(run, state).get("approval_timeout_s", settings.APPROVAL_DUE_SECONDS)


def _signing_order(groups: list[str], chain: dict[str, str]) -> list[str]:
    """Lower groups of the escalation chain sign first; groups outside the chain sign last."""
    rank: dict[str, int] = {}
    for start in chain:
        group, depth = start, 0
        while group in chain and depth <= len(chain):
            group, depth = chain[group], depth + 1
        rank[start] = -depth  # the longer the way up, the lower the group
    unique = list(dict.fromkeys(groups))
    return sorted(unique, key=lambda g: (rank.get(g, 1), unique.index(g)))


def _audit_ids(run: Run) -> dict[str, Any]:
    return {"trace_id": run.trace_id, "run_id": run.pk, "release_id": run.release_id}


@transaction.atomic
def reviewer_clearance_set(*, user: AbstractBaseUser, level: int, actor: Actor) -> ReviewerClearance:
    """Clear a reviewer for data up to `level` (audited: it widens or narrows what they decide)."""
    if level not in ReviewerClearance.Level.values:
        raise InvalidInput(f"Unknown clearance level {level!r}.")
    clearance, _ = ReviewerClearance.objects.select_for_update().get_or_create(user=user)
    previous = clearance.level
    clearance.level, clearance.updated_at = level, Now()
    clearance.save(update_fields=["level", "updated_at"])
    record(
        actor,
        "reviewer.clearance_set",
        clearance,
        {
            "user": user.get_username(),
            "from": ReviewerClearance.Level(previous).label,
            "to": ReviewerClearance.Level(level).label,
        },
    )
    return clearance
