"""One step of a released workflow, committed as one transaction, and what follows a failure.

The step itself runs outside any transaction (model and tool calls are slow); its outcome is
then committed at once: checkpoint, effect row, next state, spend, audit events. A crash in
between leaves the run at its last checkpoint, and the effect ledger's write-ahead row makes
the retried step reconcile instead of repeating a side effect.
"""

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from controlplane.audit import record
from controlplane.canonical import digest
from controlplane.dbtime import database_now, database_now_plus
from policy.services import Decision, decision_input, policy_evaluate, policy_record
from registry.workflow_definitions import END, FAIL, HUMAN

from .. import tools
from ..models import Effect, PendingAction, Run, StepCheckpoint
from .common import WORKER
from .common import add_spent as _add
from .common import audit_ids as _audit
from .common import locked_run as _locked
from .envelope import build_envelope, by_reference, envelope_problems, merged_facts, resolve
from .fanout import execute_map_step
from .released import ReleasedWorkflow, released_workflow
from .steps import (
    StepOutcome,
    choose_next,
    execute_agent_step,
    execute_gate_step,
    execute_tool_step,
    policy_run_document,
)

logger = logging.getLogger(__name__)


def execute_released_step(run: Run, lease_token: str, enqueue) -> bool:
    """Run the current step of `run` and commit its outcome; True when another step follows now."""
    released = released_workflow(run.release_id)
    completed = list(run.checkpoints.order_by("sequence").values_list("state", "output"))
    results = {state: resolve(output) for state, output in completed}
    sequence = len(completed) + 1  # a state visited twice has two checkpoints
    state = run.current_state
    step = released.step(state)
    allowed = released.allowed_next(state)
    started_at = database_now()
    envelope = build_envelope(
        run, results, state=state, allowed=allowed, step=step, source_agent=_previous_agent(released, results)
    )
    problems = envelope_problems(envelope)
    if problems:
        return _fail(run, lease_token, state, f"invalid envelope at {state}: {problems[0]}", enqueue)
    if "map" in step:
        outcome = execute_map_step(run, lease_token, step, merged_facts(run, results), sequence)
    else:
        outcome = _execute(run, released, step, results, started_at.timestamp())
    if outcome.kind == "wait":  # the branches are out; the last one to settle brings the run back
        return False
    if outcome.kind == "park":
        _park(run, lease_token, outcome)
        return False
    if outcome.kind == "retry":
        return _retry_or_dead_letter(run, lease_token, step, outcome, envelope, enqueue)
    if outcome.kind == "fail":
        return _fail(run, lease_token, state, outcome.error, enqueue)
    proposed = outcome.output.get("next") if "next" in step and isinstance(outcome.output, dict) else None
    next_state, why = choose_next(
        step, allowed, merged_facts(run, {**results, state: outcome.output}), proposed
    )
    if not next_state:
        return _fail(run, lease_token, state, f"forbidden transition: {why}", enqueue)
    spent = _add(run.spent, outcome.spent)
    log_decision = None
    # Ending counts as a move too: a last step over budget or past the deadline does not succeed.
    if next_state not in (FAIL, HUMAN):
        decision, log_decision = _transition_decision(run, released, state, next_state, allowed, spent)
        if not decision.allow:
            reasons = "; ".join(decision.reasons)
            return _fail(
                run,
                lease_token,
                state,
                f"transition {state} -> {next_state} denied: {reasons}",
                enqueue,
                log_decision=log_decision,
            )
    return _commit_step(
        run,
        lease_token,
        state,
        outcome,
        next_state,
        why,
        spent,
        started_at,
        enqueue,
        log_decision=log_decision,
        sequence=sequence,
    )


def _execute(run: Run, released: ReleasedWorkflow, step: dict, results: dict, now: float) -> StepOutcome:
    if "tool" in step:
        return execute_tool_step(run, released, step, results, now)
    if "agent" in step:
        return execute_agent_step(run, released, step, results)
    return execute_gate_step(run, step, results)


def _previous_agent(released: ReleasedWorkflow, results: dict) -> str | None:
    for state in reversed(list(results)):
        agent = released.step(state).get("agent")
        if agent:
            return agent
    return None


def _transition_decision(
    run: Run, released: ReleasedWorkflow, state: str, next_state: str, allowed: list[str], spent: dict
) -> tuple[Decision, Callable[[], Decision]]:
    """The decision, and how to log it: in the transaction that commits or fails the move."""
    document = decision_input(
        "step.transition",
        run={
            **policy_run_document(run, released, database_now().timestamp()),
            # Handing over to the next state is a hop; ending is not.
            "hop_count": run.hop_count + (0 if next_state == END else 1),
            "spent": spent,
        },
        **{"from": state},
        to=next_state,
        allowed_next=allowed,
    )
    decision = policy_evaluate("step.transition", document, bundle=released.policy)
    return decision, lambda: policy_record(
        "step.transition",
        document,
        decision,
        bundle=released.policy,
        actor=WORKER,
        trace_id=run.trace_id,
        run_id=run.pk,
    )


def _commit_step(
    run,
    lease_token,
    state,
    outcome,
    next_state,
    why,
    spent,
    started_at,
    enqueue,
    log_decision=None,
    sequence=1,
) -> bool:
    with transaction.atomic():
        locked = _locked(run, lease_token)
        if locked is None:
            return False
        if log_decision:
            log_decision()  # the lease expired meanwhile; another worker owns the run now
        StepCheckpoint.objects.create(
            run=locked,
            sequence=sequence,
            state=state,
            output=by_reference(outcome.output),
            details=outcome.details,
            started_at=started_at,
        )
        effect_pk = outcome.details.get("effect")
        if effect_pk:
            Effect.objects.filter(pk=effect_pk).update(
                status=Effect.Status.COMMITTED,
                result=outcome.output,
                effect_id=outcome.details.get("effect_id", ""),
                updated_at=Now(),
            )
        locked.spent, locked.step_attempts, locked.updated_at = spent, 0, Now()
        locked.claims_since_progress = 0
        locked.hop_count += 1
        record(
            WORKER,
            "run.step.completed",
            locked,
            {
                "state": state,
                "sequence": sequence,
                "output_digest": digest(outcome.output),
                "next_state": next_state,
                "why": why,
                **{
                    k: v
                    for k, v in outcome.details.items()
                    if k
                    in (
                        "kind",
                        "agent",
                        "tool",
                        "config",
                        "fallbacks",
                        "tokens",
                        "cost_usd",
                        "idempotency_key",
                        "replayed",
                        "reconciled",
                        "policy_decision",
                    )
                },
            },
            **_audit(locked),
        )
        if next_state == END:
            locked.status, locked.finished_at = Run.Status.SUCCEEDED, Now()
            locked.lease_owner, locked.lease_expires_at = "", None
            record(WORKER, "run.succeeded", locked, {"steps": sequence, "spent": spent}, **_audit(locked))
        elif next_state == HUMAN:
            _create_pending(
                locked,
                {
                    "state": state,
                    "reasons": [f"{state} handed the case to a human"],
                    "proposed_action": {"handoff": state},
                    "action_hash": digest({"handoff": state, "run": str(locked.pk)}),
                    "risk": {},
                    "approvers": ["reviewer"],
                    "quorum": 1,
                    "policy_decision_id": None,
                },
            )
        else:
            locked.current_state = next_state
            locked.lease_expires_at = database_now_plus(settings.RUN_LEASE_SECONDS)
        locked.save()
    if next_state == FAIL:
        return _fail(run, lease_token, state, f"{state} routed the run to fail", enqueue)
    return next_state not in (END, HUMAN)


def _create_pending(locked: Run, pending: dict) -> PendingAction:
    action = PendingAction.objects.create(run=locked, **pending)
    locked.status = Run.Status.WAITING_APPROVAL
    locked.lease_owner, locked.lease_expires_at = "", None
    record(
        WORKER,
        "run.waiting_approval",
        locked,
        {
            "state": pending["state"],
            "pending_action": action.pk,
            "reasons": pending["reasons"],
            "action_hash": pending["action_hash"],
            "approvers": pending["approvers"],
        },
        **_audit(locked),
    )
    return action


def _park(run: Run, lease_token: str, outcome: StepOutcome) -> None:
    with transaction.atomic():
        locked = _locked(run, lease_token)
        if locked is None:
            return
        # A new request replaces any earlier one for this state: an approval binds to one action.
        PendingAction.objects.filter(
            run=locked,
            state=outcome.pending["state"],
            status__in=[PendingAction.Status.PENDING, PendingAction.Status.APPROVED],
        ).exclude(action_hash=outcome.pending["action_hash"]).update(status=PendingAction.Status.SUPERSEDED)
        _create_pending(locked, outcome.pending)
        locked.claims_since_progress = 0
        locked.updated_at = Now()
        locked.save()


def _retry_or_dead_letter(run, lease_token, step, outcome, envelope, enqueue) -> bool:
    max_attempts = step.get("retry", {}).get("max_attempts", settings.RUN_STEP_MAX_ATTEMPTS)
    base = step.get("retry", {}).get("backoff_s", settings.RUN_RETRY_BACKOFF_SECONDS)
    with transaction.atomic():
        locked = _locked(run, lease_token)
        if locked is None:
            return False
        locked.step_attempts += 1
        locked.claims_since_progress = 0  # the worker survived the attempt: a failure, not a crash
        locked.updated_at = Now()
        if outcome.retryable and locked.step_attempts < max_attempts:
            delay = base * 2 ** (locked.step_attempts - 1)
            locked.lease_owner = ""
            locked.lease_expires_at = database_now_plus(delay + settings.RUN_LEASE_SECONDS)
            locked.save()
            record(
                WORKER,
                "run.step.retrying",
                locked,
                {
                    "state": step["name"],
                    "attempt": locked.step_attempts,
                    "delay_s": delay,
                    "error": outcome.error,
                },
                **_audit(locked),
            )
            transaction.on_commit(lambda: enqueue(locked.pk, countdown=delay))
            return False
        locked.save()
    if _committed_effects(run):
        return _fail(
            run,
            lease_token,
            step["name"],
            f"gave up after {locked.step_attempts} attempts: {outcome.error}",
            enqueue,
        )
    with transaction.atomic():
        locked = _locked(run, lease_token)
        if locked is None:
            return False
        locked.status, locked.error, locked.finished_at = Run.Status.DEAD_LETTERED, outcome.error, Now()
        locked.lease_owner, locked.lease_expires_at = "", None
        locked.save()
        record(
            WORKER,
            "run.dead_lettered",
            locked,
            {
                "state": step["name"],
                "attempts": locked.step_attempts,
                "error": outcome.error,
                "envelope": by_reference(envelope),
            },
            **_audit(locked),
        )
    return False


def _committed_effects(run: Run) -> list[Effect]:
    return list(Effect.objects.filter(run=run, status=Effect.Status.COMMITTED).order_by("-created_at", "-pk"))


def _fail(run: Run, lease_token: str, state: str, error: str, enqueue: Any, log_decision=None) -> bool:
    """Fail closed. Completed side effects are compensated in reverse order (saga) first."""
    effects = _committed_effects(run)
    with transaction.atomic():
        locked = _locked(run, lease_token)
        if locked is None:
            return False
        if log_decision:
            log_decision()
        locked.error, locked.updated_at = error, Now()
        locked.status = Run.Status.COMPENSATING if effects else Run.Status.FAILED
        if not effects:
            locked.finished_at, locked.lease_owner, locked.lease_expires_at = Now(), "", None
        else:  # compensating under a fresh lease; should this worker die, the sweeper resumes it
            locked.lease_expires_at = database_now_plus(settings.RUN_LEASE_SECONDS)
        locked.save()
        record(
            WORKER,
            "run.failed" if not effects else "run.compensating",
            locked,
            {"state": state, "error": error, "effects": len(effects)},
            **_audit(locked),
        )
    if effects:
        _compensate(run, lease_token, effects)
    return False


def fail_crashed_step(run: Run, lease_token: str, error: Exception, enqueue: Any) -> bool:
    """A step that raised fails the run closed, so that its message cannot come back forever."""
    reason = (str(error).splitlines() or [""])[0]  # the first line: later ones may quote SQL and data
    state = run.current_state
    return _fail(run, lease_token, state, f"step {state} raised {type(error).__name__}: {reason}", enqueue)


def compensation_resume(run: Run, lease_token: str) -> bool:
    """Go on undoing the effects of a run whose worker died while compensating them; if it had
    already met a compensation that failed, it stopped there, and so does this."""
    failed = list(Effect.objects.filter(run=run, status=Effect.Status.COMPENSATION_FAILED))
    _compensate(run, lease_token, [] if failed else _committed_effects(run), failed)
    return False


def _compensate(run: Run, lease_token: str, effects: list[Effect], failed: list | None = None) -> None:
    released = released_workflow(run.release_id)
    compensated, failed = [], list(failed or [])
    for effect in effects:
        if not effect.compensation_tool:
            continue
        spec = released.tool(effect.tool)
        call = tools.ToolCall(
            tool=effect.tool, spec=spec, args=effect.args, idempotency_key=effect.idempotency_key
        )
        original = tools.ToolResult(result=effect.result or {}, effect_id=effect.effect_id, replayed=False)
        try:
            undone = tools.compensate(call, released.tool(effect.compensation_tool), original)
        except tools.ToolError as error:
            failed.append(effect)
            Effect.objects.filter(pk=effect.pk).update(
                status=Effect.Status.COMPENSATION_FAILED, updated_at=Now()
            )
            logger.warning("compensation of %s failed: %s", effect.idempotency_key[:12], error)
            break  # later (earlier-made) effects stay for the operator, in order
        Effect.objects.filter(pk=effect.pk).update(
            status=Effect.Status.COMPENSATED, compensation_result=undone.result, updated_at=Now()
        )
        compensated.append(effect.tool)
    with transaction.atomic():
        locked = _locked(run, lease_token)
        if locked is None:
            return
        locked.status = Run.Status.COMPENSATION_FAILED if failed else Run.Status.COMPENSATED
        if not failed:
            locked.finished_at = Now()
        locked.lease_owner, locked.lease_expires_at, locked.updated_at = "", None, Now()
        locked.save()
        record(
            WORKER,
            "run.compensation_failed" if failed else "run.compensated",
            locked,
            {"compensated": compensated, "failed": [e.tool for e in failed]},
            **_audit(locked),
        )
