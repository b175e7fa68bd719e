"""Executing one step of a released workflow: an agent's model call, a tool call, or a human gate.

Each executor returns a `StepOutcome` and writes nothing but a tool call's decision log row and
its write-ahead intent in the effect ledger; the caller commits the outcome (checkpoint, next
state, audit) in one transaction.
"""

import re
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import IntegrityError, connection
from django.db.models import QuerySet
from django.db.models.functions import Now

from controlplane.canonical import digest
from controlplane.compiled import compiled_once
from controlplane.models import AuditEvent
from policy.services import Decision, decision_input, decision_row, policy_evaluate, policy_record
from registry.expressions import EvaluationError, ExpressionError, is_true, parse
from registry.models import Agent
from registry.workflow_definitions import END

from .. import providers, tools
from ..models import Effect, PendingAction, Run
from . import commit_sql
from .common import own_transaction
from .envelope import merged_facts
from .released import DEFAULT_TOOL_TIMEOUT_S, ReleasedWorkflow

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")


@dataclass
class StepOutcome:
    kind: str  # done, park, retry, fail; for map steps and branches also wait, cancelled
    output: dict | None = None
    next_state: str = ""
    details: dict = field(default_factory=dict)
    error: str = ""
    retryable: bool = True
    pending: dict | None = None
    spent: dict = field(default_factory=dict)  # increments: tokens, tool_calls, cost_usd


def idempotency_key(run: Run, state: str, business_key: str) -> str:
    """sha256(run_id, step, business key): the same effect of the same step has one key."""
    return digest({"run": str(run.pk), "step": state, "business_key": business_key})


def policy_run_document(run: Run, released: ReleasedWorkflow, now: float) -> dict:
    limits = released.definition.get("limits", {})
    return {
        "id": str(run.pk),
        "workflow": run.workflow,
        "release_id": run.release_id,
        "hop_count": run.hop_count,
        "max_hops": limits.get("max_hops", 100),
        "budget": run.budget,
        "spent": run.spent,
        "now": now,
        "deadline": run.deadline.timestamp() if run.deadline else None,
        "sensitivity": run.sensitivity,
    }


def render(template: str, variables: dict) -> str:
    """`{{ name }}` substitution only: prompts are data, never code."""
    return _VARIABLE.sub(lambda m: str(_lookup(variables, m.group(1), "")), template)


def _lookup(variables: dict, path: str, default: Any) -> Any:
    value: Any = variables
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


def choose_next(step: dict, allowed: list[str], facts: dict, proposed: Any) -> tuple[str, str]:
    """(next state, why) or ("", error): route conditions first, then the model's proposal, then
    the default. A proposal outside the allowed next states fails closed."""
    for route in step.get("route", []):
        try:
            if is_true(route["if"], facts):
                return route["to"], f"route {route['if']!r}"
        except (EvaluationError, ExpressionError):
            continue
    if proposed is not None:
        if proposed not in allowed:
            return "", f"transition to {proposed!r} is not allowed from {step['name']!r} (allowed: {allowed})"
        return proposed, "proposed by the step's output"
    return allowed[0], "default"


def execute_agent_step(
    run: Run,
    released: ReleasedWorkflow,
    step: dict,
    results: dict,
    *,
    facts: dict | None = None,
    attempts: int | None = None,
) -> StepOutcome:
    """`facts` and `attempts` default to the run's; a map branch passes its own."""
    facts = merged_facts(run, results) if facts is None else facts
    key = idempotency_key(
        run, step["name"], _attempt(run, run.step_attempts if attempts is None else attempts)
    )
    prompt_name, requests = model_requests(released, step, {**facts, "results": results}, key)
    try:
        reply = providers.complete_with_fallback(requests)
    except providers.MalformedOutput as malformed:
        # One bounded repair: ask again with the validation error, then give up to the retry rule.
        try:
            reply = providers.complete(
                providers.repair_request(requests[0], malformed.raw_text, malformed.problem)
            )
        except providers.ProviderError as error:
            return StepOutcome(
                "retry",
                error=f"malformed model output after repair: {error}",
                details={"repair": True, "raw": malformed.raw_text[:2000]},
            )
    except providers.ProviderError as error:
        return StepOutcome("retry", error=f"model call failed: {error}", retryable=error.retryable)
    details = {
        "kind": "model",
        "agent": step["agent"],
        "prompt": prompt_name,
        "prompt_digest": digest(requests[0].prompt),
        "model": reply.model,
        "provider": reply.provider,
        "config": reply.config_name,
        "fallbacks": list(reply.fallbacks),
        "tokens": reply.prompt_tokens + reply.completion_tokens,
        "cost_usd": reply.cost_usd,
        "latency_ms": reply.latency_ms,
    }
    spent = {"tokens": reply.prompt_tokens + reply.completion_tokens, "cost_usd": reply.cost_usd}
    return StepOutcome("done", output=reply.output, details=details, spent=spent)


def model_requests(
    released: ReleasedWorkflow, step: dict, variables: dict, key: str
) -> tuple[str, list["providers.ModelRequest"]]:
    """(the prompt's name, one request per model config of the step's fallback chain, in order)."""
    binding = released.agents.get(step["agent"], {})
    prompt_name = step.get("prompt") or binding.get("prompt")
    prompt = released.artifacts["prompt"][prompt_name]
    requests = [
        providers.ModelRequest(
            config_name=name,
            config=config,
            purpose=prompt_name,
            prompt=render(prompt["template"], variables),
            variables=variables,
            output_schema=step.get("output_schema"),
            idempotency_key=key,
        )
        for name, config in released.model_chain(step.get("model_config") or binding["model_config"])
    ]
    return prompt_name, requests


def _attempt(run: Run, attempts: int) -> str:
    """Which attempt of the current step this is. An operator's retry restarts the count, so it
    starts a new series: a provider caching by key must answer the retried run afresh."""
    retries = AuditEvent.objects.filter(run_id=str(run.pk), action="run.retried").count()
    return f"{retries}:{attempts}" if retries else str(attempts)


def gate_conditions_fired(step: dict, facts: dict) -> list[str]:
    """The step's `human_if` conditions that hold; one that cannot be evaluated counts as
    holding: a human looks, rather than nobody."""
    fired = []
    for condition in step["human_if"]:
        try:
            if is_true(condition, facts):
                fired.append(condition)
        except EvaluationError as error:
            fired.append(f"{condition} (could not be evaluated: {error})")
    return fired


def gate_proposed_action(step: dict, fired: list[str], facts: dict) -> dict:
    return {
        "gate": step["name"],
        "conditions": fired,
        "facts": {k: facts[k] for k in _condition_names(step) if k in facts},
    }


def execute_gate_step(run: Run, step: dict, results: dict) -> StepOutcome:
    facts = merged_facts(run, results)
    fired = gate_conditions_fired(step, facts)
    if not fired:
        return StepOutcome("done", output={"approval_required": False}, details={"kind": "gate", "fired": []})
    proposed = gate_proposed_action(step, fired, facts)
    action_hash = _action_hash(run, proposed)
    if _approved(run, step["name"], action_hash):
        return StepOutcome(
            "done",
            output={"approval_required": True, "approved": True},
            details={"kind": "gate", "fired": fired},
        )
    return _park(
        step,
        proposed,
        action_hash,
        reasons=fired,
        approvers=["reviewer"],
        quorum=1,
        risk={"conditions": fired},
        decision_id=None,
    )


def _condition_names(step: dict) -> set[str]:
    names: set[str] = set()
    for condition in step.get("human_if", []):
        try:
            names |= {path.split(".")[0] for path in parse(condition).variables}
        except ExpressionError:
            continue
    return names


def _action_hash(run: Run, proposed: dict) -> str:
    """What an approval binds to: the exact action, under the run's release."""
    return digest({"action": proposed, "release": run.release_id})


def _approved(run: Run, state: str, action_hash: str) -> bool:
    return PendingAction.objects.filter(
        run=run, state=state, action_hash=action_hash, status=PendingAction.Status.APPROVED
    ).exists()


def _park(
    step: dict,
    proposed: dict,
    action_hash: str,
    *,
    reasons: list[str],
    approvers: list[str],
    quorum: int,
    risk: dict,
    decision_id: int | None,
) -> StepOutcome:
    """Park the run with a pending action: this exact action waits for a decision."""
    return StepOutcome(
        "park",
        pending={
            "state": step["name"],
            "reasons": reasons,
            "proposed_action": proposed,
            "action_hash": action_hash,
            "risk": risk,
            "approvers": approvers,
            "quorum": quorum,
            "policy_decision_id": decision_id,
        },
    )


def tool_arguments(step: dict, spec: dict, facts: dict) -> dict:
    """Arguments from the step's `args` (a string starting with '=' is an expression over the
    facts), else the facts named like the tool's declared arguments."""
    if "args" in step:
        return {
            name: (
                parse(value[1:]).evaluate(facts)
                if isinstance(value, str) and value.startswith("=")
                else value
            )
            for name, value in step["args"].items()
        }
    properties = spec.get("args_schema", {}).get("properties", {})
    return {name: facts[name] for name in properties if name in facts}


def execute_tool_step(
    run: Run, released: ReleasedWorkflow, step: dict, results: dict, now: float, *, facts: dict | None = None
) -> StepOutcome:
    """`facts` default to the run's; a map branch passes its own (with its element)."""
    spec = released.tool(step["tool"])
    facts = merged_facts(run, results) if facts is None else facts
    try:
        args = tool_arguments(step, spec, facts)
    except (EvaluationError, ExpressionError) as error:
        return StepOutcome(
            "fail", error=f"cannot build the arguments of {step['tool']}: {error}", retryable=False
        )
    key = idempotency_key(
        run, step["name"], str(facts.get(step.get("idempotency_key", "case_id"), run.case_id))
    )
    proposed = {"tool": step["tool"], "args": args}
    ruling = _tool_ruling(run, released, step, spec, proposed, facts, now, key)
    decision = ruling.decision
    if not decision.allow:
        return StepOutcome(
            "fail",
            error=f"policy denied {step['tool']}: {'; '.join(decision.reasons)}",
            retryable=False,
            details={"policy_decision": decision.decision_id},
        )
    if not ruling.approved:
        if spec["side_effect"] != "read" and _effect_args(key) not in (None, args):
            # Asking a reviewer about an action that could never run under this key is no use.
            return _key_used_with_other_arguments(step, {"policy_decision": decision.decision_id})
        return _park(
            step,
            proposed,
            ruling.action_hash,
            reasons=decision.reasons,
            approvers=decision.approvers,
            quorum=decision.quorum or 1,
            decision_id=decision.decision_id,
            risk={
                "side_effect": spec["side_effect"],
                "amount": facts.get("amount"),
                "sensitivity": run.sensitivity,
            },
        )
    return _call_tool(run, released, step, spec, args, key, ruling)


def _effect_args(key: str) -> dict | None:
    """The arguments of the effect already under `key`, if any."""
    return Effect.objects.filter(idempotency_key=key).values_list("args", flat=True).first()


def _key_used_with_other_arguments(step: dict, details: dict) -> StepOutcome:
    # Same key, other arguments: a loop came back to this step, or its facts changed. The tool
    # would answer the first call's effect as this one's; refuse to pretend it did.
    return StepOutcome(
        "fail",
        error=(
            f"{step['tool']}: an effect under this step's idempotency key was made with other "
            "arguments; a step the workflow comes back to needs an idempotency_key that differs "
            "each time"
        ),
        retryable=False,
        details=details,
    )


# What tool.call's input says of the acting agent: (status, data classification, allowed tools,
# service user's name), as `acting_agents` reads them.
AGENT_FACTS = ("status", "data_classification", "allowed_tools", "service_user__username")


def acting_agents() -> QuerySet:
    """slug and AGENT_FACTS of every agent (a replay reads them all at once)."""
    return Agent.objects.values_list("slug", *AGENT_FACTS)


@compiled_once
def _acting_agent(slug: str) -> QuerySet:
    return acting_agents().filter(slug=slug)


def tool_decision_input(run, released, step, spec, agent: tuple | None, agent_slug, args, facts, now) -> dict:
    """`agent`: AGENT_FACTS of the acting agent, None for one the registry does not know."""
    status, classification, allowed_tools, identity = agent or ("unknown", "restricted", [], "")
    return decision_input(
        "tool.call",
        run=policy_run_document(run, released, now),
        agent={
            "slug": agent_slug or "",
            "status": status,
            "data_classification": classification,
            "allowed_tools": {t["tool"]: t["scope"] for t in allowed_tools},
            "identity": identity,
        },
        tool={
            "name": step["tool"],
            "side_effect": spec["side_effect"],
            "external": spec.get("external", False),
        },
        args=args,
        facts=_call_facts(args, facts),
    )


@dataclass(frozen=True)
class _ToolRuling:
    """What stands before a tool call: policy's decision (logged), whether the exact action was
    approved (true when policy asks for no approval), and for a write allowed to go ahead its
    write-ahead row and whether this attempt wrote it."""

    decision: Decision
    approved: bool
    action_hash: str | None = None
    effect: Effect | None = None
    created: bool = False


def _tool_ruling(run, released, step, spec, proposed, facts, now, key) -> _ToolRuling:
    """Decide the call, log the decision, check the approval and write the intent ahead: one
    statement on PostgreSQL (commit_sql.TOOL_DECISION), the same writes one by one elsewhere."""
    agent_slug = step.get("agent") or released.definition.get("run_as")
    agent = next((row[1:] for row in _acting_agent(agent_slug)), None)
    args = proposed["args"]
    document = tool_decision_input(run, released, step, spec, agent, agent_slug, args, facts, now)
    decision = policy_evaluate("tool.call", document, bundle=released.policy)
    logged_as = {
        "bundle": released.policy,
        "actor": f"agent:{agent_slug}",
        "trace_id": run.trace_id,
        "run_id": run.pk,
    }
    approval_needed = decision.allow and decision.require_approval
    action_hash = _action_hash(run, proposed) if approval_needed else None
    intent = None
    if decision.allow and spec["side_effect"] != "read":
        intent = {
            "run_id": run.pk,
            "state": step["name"],
            "tool": step["tool"],
            "idempotency_key": key,
            "args": args,
            "status": Effect.Status.INTENDED,
            "effect_id": "",
            "compensation_tool": step.get("compensate") or spec.get("compensation_tool", ""),
        }
    if connection.vendor == "postgresql":
        row = decision_row("tool.call", document, decision, **logged_as)
        return _tool_ruling_in_one_statement(run, step, decision, row, action_hash, intent)
    decision = policy_record("tool.call", document, decision, **logged_as)
    approved = action_hash is None or _approved(run, step["name"], action_hash)
    if intent is None or not approved:
        return _ToolRuling(decision, approved, action_hash)
    effect, created = _write_ahead(**intent)
    return _ToolRuling(decision, approved, action_hash, effect, created)


def _tool_ruling_in_one_statement(run, step, decision, row, action_hash, intent) -> _ToolRuling:
    arguments = {
        "decision": commit_sql.json_argument(row),
        "action_hash": action_hash,
        "run": run.pk,
        "state": step["name"],
        "intent": commit_sql.json_argument(intent) if intent else None,
    }
    with own_transaction(), commit_sql.server_binding_cursor() as cursor:
        cursor.execute(commit_sql.TOOL_DECISION, arguments)
        decision_id, approved, effect_pk = cursor.fetchone()
    decision = replace(decision, decision_id=decision_id)
    if intent is None or not approved:
        return _ToolRuling(decision, approved, action_hash)
    if effect_pk is None:  # the key's row is a first attempt's
        effect = Effect.objects.get(idempotency_key=intent["idempotency_key"])
        return _ToolRuling(decision, approved, action_hash, effect)
    return _ToolRuling(decision, approved, action_hash, Effect(pk=effect_pk, **intent), created=True)


def transition_decision_input(
    run, released, *, state: str, next_state: str, allowed: list, spent: dict, now
) -> dict:
    """The `step.transition` input for moving `run` from `state` to `next_state`."""
    return decision_input(
        "step.transition",
        run={
            **policy_run_document(run, released, now),
            # Handing over to the next state is a hop; ending is not.
            "hop_count": run.hop_count + (0 if next_state == END else 1),
            "spent": spent,
        },
        **{"from": state},
        to=next_state,
        allowed_next=allowed,
    )


def _read(call: "tools.ToolCall", step: dict, decision: Decision) -> StepOutcome:
    """A read changes nothing, so it needs no write-ahead row: it is simply asked again on retry."""
    details = {"kind": "tool", "tool": step["tool"], "policy_decision": decision.decision_id}
    try:
        result = tools.invoke(call)
    except tools.ToolError as error:
        return StepOutcome(
            "retry" if error.retryable else "fail",
            error=f"{step['tool']} failed: {error}",
            retryable=error.retryable,
            details=details,
        )
    return StepOutcome("done", output=result.result, spent={"tool_calls": 1}, details=details)


def _write_ahead(**intent: Any) -> tuple[Effect, bool]:
    """(The effect's row, whether this call wrote it.) The intent is committed before the call,
    so that a crash after it is seen: one INSERT, its own transaction. A retry's INSERT meets the
    unique key its first attempt wrote, and reads that row instead."""
    try:
        with own_transaction():
            return Effect.objects.create(**intent), True
    except IntegrityError:
        effect = Effect.objects.filter(idempotency_key=intent["idempotency_key"]).first()
        if effect is None:  # some other constraint refused the row
            raise
        return effect, False


def _call_facts(args: dict, facts: dict) -> dict:
    """The amount is the call's own (money moves with the arguments); confidence is the run's."""
    amount = args.get("amount", args.get("refund_amount"))
    called = {"amount": amount} if isinstance(amount, int | float) and not isinstance(amount, bool) else {}
    confidence = facts.get("confidence")
    if isinstance(confidence, int | float) and not isinstance(confidence, bool):
        called["confidence"] = confidence
    return called


def _call_tool(run, released, step, spec, args, key, ruling: _ToolRuling) -> StepOutcome:
    call = tools.ToolCall(
        tool=step["tool"],
        spec=spec,
        args=args,
        idempotency_key=key,
        timeout_s=step.get("timeout_s", DEFAULT_TOOL_TIMEOUT_S),
    )
    if spec["side_effect"] == "read":
        return _read(call, step, ruling.decision)
    effect, created = ruling.effect, ruling.created
    details = {
        "kind": "tool",
        "tool": step["tool"],
        "idempotency_key": key,
        "effect": effect.pk,
        "policy_decision": ruling.decision.decision_id,
    }
    if not created and effect.args != args:
        return _key_used_with_other_arguments(step, details)
    if effect.status == Effect.Status.COMMITTED:
        return StepOutcome("done", output=effect.result, details={**details, "replayed": True})
    unknown = effect.status == Effect.Status.UNKNOWN  # the last call may have taken effect: ask first
    if not created and (unknown or step.get("reconcile_before_retry") or spec.get("reconcile_lookup")):
        lookup = released.artifacts["tool"].get(spec.get("reconcile_lookup", ""))
        try:
            found = tools.reconcile(call, lookup)
        except tools.ToolError as error:  # never assume "not done": ask again later, or stop
            return StepOutcome(
                "retry" if error.retryable else "fail",
                error=f"{step['tool']} could not be reconciled: {error}",
                retryable=error.retryable,
                details=details,
            )
        if found is not None:
            return StepOutcome(
                "done",
                output=found.result,
                details={**details, "reconciled": True, "effect_id": found.effect_id},
            )
    try:
        result = tools.invoke(call)
    except tools.ToolOutcomeUnknown as error:
        Effect.objects.filter(pk=effect.pk).update(status=Effect.Status.UNKNOWN)
        return StepOutcome("retry", error=f"{step['tool']} outcome unknown: {error}", details=details)
    except tools.ToolError as error:
        if getattr(error, "effect_id", ""):  # it happened, outside its contract: record it to be undone
            Effect.objects.filter(pk=effect.pk).update(
                status=Effect.Status.COMMITTED, effect_id=error.effect_id, updated_at=Now()
            )
        elif not error.retryable:
            Effect.objects.filter(pk=effect.pk).update(status=Effect.Status.REJECTED)
        return StepOutcome(
            "retry" if error.retryable else "fail",
            error=f"{step['tool']} failed: {error}",
            retryable=error.retryable,
            details=details,
        )
    return StepOutcome(
        "done",
        output=result.result,
        spent={"tool_calls": 1},
        details={**details, "effect_id": result.effect_id, "replayed": result.replayed},
    )
