"""One step of a released workflow, committed as one transaction, and what follows a failure.

The step itself runs outside any transaction (model and tool calls are slow); its outcome is
then committed at once: checkpoint, effect row, next state, spend, audit events. A crash in
between leaves the run at its last checkpoint, and the effect ledger's write-ahead row makes
the retried step reconcile instead of repeating a side effect.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Now

from controlplane.audit import Entry, append_argument, record, record_many
from controlplane.canonical import digest
from controlplane.dbtime import database_now, database_now_plus
from controlplane.telemetry import span
from policy.models import PolicyDecision
from policy.services import Decision, decision_row, policy_evaluate
from registry.workflow_definitions import END, FAIL, HUMAN

from .. import tools
from ..models import Effect, PendingAction, Run, StepCheckpoint
from . import commit_sql
from .common import WORKER, lease_lasts, own_transaction, record_committed_effect
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
    transition_decision_input,
)

logger = logging.getLogger(__name__)


@dataclass
class Progress:
    """What the worker holding a run's lease knows of it between steps: read once when it took
    the lease, then kept current by its own commits. Nobody else writes a leased run without
    taking the lease away (cancel, sweeper), which the next commit's lease check notices."""

    results: dict[str, Any]
    # The same outputs as the checkpoints store them (a large one by reference): what an
    # envelope carries, kept rather than measured again at every step.
    carried: dict[str, Any]
    completed: int  # checkpoints so far
    now: datetime  # database time at which the next step starts


def progress_of(run: Run, now: datetime | None = None, completed: list | None = None) -> Progress:
    """`completed`: the run's checkpoints' (state, output) in order, when the caller read them."""
    if completed is None:
        # Every checkpoint is a hop: a run that has made none has nothing to read.
        completed = (
            list(run.checkpoints.order_by("sequence").values_list("state", "output")) if run.hop_count else []
        )
    results = {state: resolve(output) for state, output in completed}
    return Progress(results, dict(completed), len(completed), now or database_now())


def execute_released_step(run: Run, lease_token: str, enqueue, progress: Progress | None = None) -> bool:
    """Run the current step of `run` and commit its outcome; True when another step follows now.

    With `progress` (the worker's running knowledge of the run), nothing is read again; on a
    committed step both `run` and `progress` are brought up to date in memory."""
    with span("step", inherited={"step": run.current_state}):
        return _execute_released_step(run, lease_token, enqueue, progress or progress_of(run))


def _execute_released_step(run: Run, lease_token: str, enqueue, progress: Progress) -> bool:
    released = released_workflow(run.release_id)
    results = progress.results
    sequence = progress.completed + 1  # a state visited twice has two checkpoints
    state = run.current_state
    step = released.step(state)
    allowed = released.allowed_next(state)
    started_at = progress.now
    envelope = build_envelope(
        run,
        results,
        progress.carried,
        state=state,
        allowed=allowed,
        step=step,
        source_agent=_previous_agent(released, results),
    )
    problems = envelope_problems(envelope)
    if problems:
        return _fail(run, lease_token, state, f"invalid envelope at {state}: {problems[0]}", enqueue)
    if "map" in step:
        outcome = execute_map_step(run, lease_token, step, merged_facts(run, results), sequence)
    elif not lease_lasts(Run, run.pk, lease_token, released.step_time_limit(step)):
        return False  # the lease was taken away since the last commit
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
        return _fail(run, lease_token, state, f"forbidden transition: {why}", enqueue, failed=outcome)
    spent = _add(run.spent, outcome.spent)
    move = _Move(state, next_state, why, allowed, sequence, started_at, spent, by_reference(outcome.output))
    committed, denied = _commit_step(run, lease_token, released, outcome, move)
    if denied is not None:
        reasons = "; ".join(denied[0].reasons)
        error = f"transition {state} -> {next_state} denied: {reasons}"
        return _fail(run, lease_token, state, error, enqueue, log_decision=denied[1], failed=outcome)
    if not committed:
        return False  # the lease expired meanwhile: another worker owns the run now
    progress.results[state], progress.carried[state] = outcome.output, move.output
    progress.completed, progress.now = sequence, committed
    if next_state == FAIL:
        return _fail(run, lease_token, state, f"{state} routed the run to fail", enqueue)
    return next_state not in (END, HUMAN)


@dataclass(frozen=True)
class _Move:
    state: str
    next_state: str
    why: str
    allowed: list[str]
    sequence: int
    started_at: datetime
    spent: dict
    output: Any  # as the checkpoint stores it (by reference when large)


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
    run: Run, released: ReleasedWorkflow, move: _Move, now: float
) -> tuple[Decision, dict]:
    """The decision, and its log row's fields: inserted by the transaction that commits or fails the move."""
    document = transition_decision_input(
        run,
        released,
        state=move.state,
        next_state=move.next_state,
        allowed=move.allowed,
        spent=move.spent,
        now=now,
    )
    decision = policy_evaluate("step.transition", document, bundle=released.policy)
    row = decision_row(
        "step.transition",
        document,
        decision,
        bundle=released.policy,
        actor=WORKER,
        trace_id=run.trace_id,
        run_id=run.pk,
    )
    return decision, row


_COMPLETED_DETAILS = (
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
    "branches",
)


def _own_lease_and_now(run: Run, lease_token: str) -> datetime | None:
    """Lock the run row and read the database clock in one statement; None if the lease is gone."""
    row = (
        Run.objects.select_for_update()
        .filter(pk=run.pk)
        .annotate(now=Now())
        .values_list("lease_owner", "now")
        .first()
    )
    return row[1] if row and row[0] == lease_token else None


def _commit_step(
    run: Run, lease_token: str, released: ReleasedWorkflow, outcome: StepOutcome, move: _Move
) -> tuple[datetime | None, tuple[Decision, Callable] | None]:
    """(database time of the commit, or None if the lease was lost; the refusal and how to log
    it, when policy denied the move). The move is decided on the database time at which the step
    started, before the commit; should the run's deadline pass between that time and the
    commit, it is decided again on the commit's time: a step that ends late does not succeed."""
    decided_at = move.started_at
    while True:
        decision = None
        # Ending counts as a move too: a last step over budget or past the deadline does not succeed.
        if move.next_state not in (FAIL, HUMAN):
            verdict, decision = _transition_decision(run, released, move, decided_at.timestamp())
            if not verdict.allow:
                record_committed_effect(outcome.details, outcome.output)  # the saga must undo it
                return None, (verdict, partial(PolicyDecision.objects.create, **decision))
        written, at = _write_step(run, lease_token, outcome, move, decision, decided_at)
        if written != commit_sql.LATE:
            return (at if written == commit_sql.COMMITTED else None), None
        decided_at = at


def _step_events(run: Run, outcome: StepOutcome, move: _Move) -> list[Entry]:
    details = {k: v for k, v in outcome.details.items() if k in _COMPLETED_DETAILS}
    completed = {
        "state": move.state,
        "sequence": move.sequence,
        "output_digest": digest(outcome.output),
        "next_state": move.next_state,
        "why": move.why,
        **details,
    }
    events = [Entry(WORKER, "run.step.completed", run, completed, **_audit(run))]
    if move.next_state == END:
        ended = {"steps": move.sequence, "spent": move.spent}
        events.append(Entry(WORKER, "run.succeeded", run, ended, **_audit(run)))
    return events


def _write_step(
    run: Run,
    lease_token: str,
    outcome: StepOutcome,
    move: _Move,
    decision: dict | None,
    decided_at: datetime,
) -> tuple[str, datetime | None]:
    """Commit the step: the effect's result, the decision, checkpoint, run and audit events, in
    one transaction under the run's lock, if the lease is still ours and the decision on time.
    (What happened, the database time it happened at.)"""
    checkpoint = {
        "run_id": run.pk,
        "sequence": move.sequence,
        "state": move.state,
        "output": move.output,
        "details": outcome.details,
        "started_at": move.started_at,
    }
    if connection.vendor == "postgresql" and move.next_state != HUMAN:
        return _write_step_in_one_statement(run, lease_token, outcome, move, decision, decided_at, checkpoint)
    with transaction.atomic():
        now = _own_lease_and_now(run, lease_token)
        # Cancelled (or swept) while the call was out, the run moves no more; but the effect
        # ledger still says what the tool did, for whoever looks at it next.
        record_committed_effect(outcome.details, outcome.output)
        if now is None:
            return commit_sql.LEASE_LOST, None
        if decision is not None:
            PolicyDecision.objects.create(**decision)
            if run.deadline is not None and decided_at <= run.deadline < now:
                return commit_sql.LATE, now  # decided in time, committing late: decide again
        run.spent, run.step_attempts, run.claims_since_progress = move.spent, 0, 0
        run.hop_count += 1
        run.updated_at = Now()
        changed = ["spent", "step_attempts", "claims_since_progress", "hop_count", "updated_at"]
        events = _step_events(run, outcome, move)
        if move.next_state == END:
            run.status, run.finished_at = Run.Status.SUCCEEDED, Now()
            run.lease_owner, run.lease_expires_at = "", None
            changed += ["status", "finished_at", "lease_owner", "lease_expires_at"]
        elif move.next_state == HUMAN:
            record_many(events)
            events = []
            _create_pending(
                run,
                {
                    "state": move.state,
                    "reasons": [f"{move.state} handed the case to a human"],
                    "proposed_action": {"handoff": move.state},
                    "action_hash": digest({"handoff": move.state, "run": str(run.pk)}),
                    "risk": {},
                    "approvers": ["reviewer"],
                    "quorum": 1,
                    "policy_decision_id": None,
                },
            )
            changed += ["status", "lease_owner", "lease_expires_at"]
        else:
            run.current_state = move.next_state
            run.lease_expires_at = database_now_plus(settings.RUN_LEASE_SECONDS)
            changed += ["current_state", "lease_expires_at"]
        StepCheckpoint.objects.create(**checkpoint)
        Run.objects.filter(pk=run.pk).update(**{field: getattr(run, field) for field in changed})
        if events:
            record_many(events)
    return commit_sql.COMMITTED, now


def _write_step_in_one_statement(
    run: Run,
    lease_token: str,
    outcome: StepOutcome,
    move: _Move,
    decision: dict | None,
    decided_at: datetime,
    checkpoint: dict,
) -> tuple[str, datetime | None]:
    """_write_step on PostgreSQL: one call of the step-commit function (see commit_sql)."""
    effect = outcome.details.get("effect")
    finishes = move.next_state == END
    arguments = [
        run.pk,
        lease_token,
        decided_at if decision is not None else None,
        settings.RUN_LEASE_SECONDS,
        commit_sql.json_argument(decision) if decision is not None else None,
        commit_sql.json_argument(checkpoint),
        effect,
        orjson.dumps(outcome.output).decode() if effect else None,
        outcome.details.get("effect_id", ""),
        move.next_state,
        orjson.dumps(move.spent).decode(),
        finishes,
        append_argument(_step_events(run, outcome, move)),
    ]
    with own_transaction(), commit_sql.server_binding_cursor() as cursor:
        cursor.execute(commit_sql.STEP_COMMIT, arguments)
        written, at = cursor.fetchone()
    if written == commit_sql.COMMITTED:  # the run in memory as the function left it
        run.spent, run.step_attempts, run.claims_since_progress = move.spent, 0, 0
        run.hop_count += 1
        run.updated_at = at
        if finishes:
            run.status, run.finished_at = Run.Status.SUCCEEDED, at
            run.lease_owner, run.lease_expires_at = "", None
        else:
            run.current_state = move.next_state
            run.lease_expires_at = at + timedelta(seconds=settings.RUN_LEASE_SECONDS)
    return written, at


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


def _fail(
    run: Run,
    lease_token: str,
    state: str,
    error: str,
    enqueue: Any,
    log_decision=None,
    failed: StepOutcome | None = None,
) -> bool:
    """Fail closed. Completed side effects are compensated in reverse order (saga) first. A step
    that failed after it answered (`failed`) keeps its answer with the event, for replay."""
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
            {
                "state": state,
                "error": error,
                "effects": len(effects),
                **(_answer(failed) if failed is not None else {}),
            },
            **_audit(locked),
        )
    if effects:
        _compensate(run, lease_token, effects)
    return False


def _answer(outcome: StepOutcome) -> dict:
    details = {k: v for k, v in outcome.details.items() if k in _COMPLETED_DETAILS}
    return {"output": by_reference(outcome.output), "details": details}


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
