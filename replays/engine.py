"""Replaying a recorded run: the engine's decisions taken again, with nothing done for real.

The walk follows the workflow as the run engine does (the same argument building, gate
conditions, routing, policy inputs and limits) but it writes nothing and calls no tool: a
tool's answer is the one the run recorded at that state. A model is asked only in a what-if
replay, and only when its prompt or configuration differs from what the run used; otherwise
its recorded answer stands. Policy is evaluated afresh (nothing is logged) with the clock of
the original step, so a deterministic replay of an unchanged release decides exactly as the
run did, and a changed bundle shows which decision it changes.

The report lists each step beside the original one, with every difference in transition,
output, policy decision and cost; the outcome is `reproduced`, `diverged` (with the first
difference) or `incomplete` (the replay needed an answer the recording does not hold).
"""

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.canonical import digest
from policy.services import Decision, policy_evaluate
from registry.expressions import EvaluationError, ExpressionError
from registry.workflow_definitions import END, FAIL, HUMAN
from runs import providers
from runs.engine.common import add_spent
from runs.engine.envelope import merged_facts
from runs.engine.released import ReleasedWorkflow
from runs.engine.steps import (
    acting_agents,
    choose_next,
    gate_conditions_fired,
    gate_proposed_action,
    model_requests,
    tool_arguments,
    tool_decision_input,
    transition_decision_input,
)
from runs.workflows import StepContext, workflow_spec

from .recording import UNRECORDED_ENDS, RecordedStep, Recording, decision_subject

REPRODUCED, DIVERGED, INCOMPLETE = "reproduced", "diverged", "incomplete"
_STEP_LIMIT = 500  # a replay follows the recorded run, which the hop limit kept finite


@dataclass
class StepReport:
    sequence: int
    state: str
    kind: str
    source: str  # recording, model (asked afresh), evaluated (gate), recorded human decision
    next_state: str | None = None
    why: str = ""
    output: Any = None
    decisions: list[dict] = field(default_factory=list)
    cost_usd: float = 0.0
    tokens: int = 0
    tool_calls: int = 0
    original: dict | None = None
    differences: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "sequence": self.sequence,
            "state": self.state,
            "kind": self.kind,
            "source": self.source,
            "next_state": self.next_state,
            "why": self.why,
            "output": self.output,
            "output_digest": digest(self.output),
            "decisions": self.decisions,
            "cost_usd": self.cost_usd,
            "tokens": self.tokens,
            "original": self.original,
            "differences": self.differences,
        }


@dataclass
class ReplayReport:
    outcome: str = REPRODUCED
    first_difference: str = ""
    steps: list[StepReport] = field(default_factory=list)
    end: str = ""
    end_state: str = ""
    error: str = ""
    original_end: str = ""
    original_error: str = ""
    original_cost_usd: float = 0.0
    replayed_cost_usd: float = 0.0
    model_calls: int = 0
    changed_decisions: int = 0

    def differ(self, what: str) -> None:
        if self.outcome == REPRODUCED:
            self.outcome, self.first_difference = DIVERGED, what

    def incomplete(self, what: str) -> None:
        self.outcome, self.first_difference = INCOMPLETE, self.first_difference or what

    def as_dict(self) -> dict:
        return {
            "outcome": self.outcome,
            "first_difference": self.first_difference,
            "end": self.end,
            "end_state": self.end_state,
            "error": self.error,
            "original_end": self.original_end,
            "original_error": self.original_error,
            "original_cost_usd": round(self.original_cost_usd, 6),
            "replayed_cost_usd": round(self.replayed_cost_usd, 6),
            "cost_delta_usd": round(self.replayed_cost_usd - self.original_cost_usd, 6),
            "model_calls": self.model_calls,
            "changed_decisions": self.changed_decisions,
            "steps": [step.as_dict() for step in self.steps],
        }


class _Stop(Exception):
    """The replayed run ends here: `end` is how (succeeded, failed, rejected, ...)."""

    def __init__(self, end: str, error: str = "", *, unrecorded: bool = False) -> None:
        super().__init__(error)
        self.end, self.error, self.unrecorded = end, error, unrecorded


def replay_released(
    recording: Recording,
    target: ReleasedWorkflow,
    original: ReleasedWorkflow,
    *,
    ask_models: bool,
) -> ReplayReport:
    """Replay `recording` on `target` (its own release in a deterministic replay); `ask_models`
    allows model calls where the prompt or configuration changed (what-if)."""
    return _Walk(recording, target, original, ask_models).walk()


class _Walk:
    def __init__(
        self, recording: Recording, target: ReleasedWorkflow, original: ReleasedWorkflow, ask_models: bool
    ):
        self.recording, self.target, self.original, self.ask_models = recording, target, original, ask_models
        self.report = ReplayReport(
            original_end=recording.end,
            original_error=recording.error,
            original_cost_usd=sum(
                float(step.details.get("cost_usd") or 0)
                for step in [*recording.steps, *recording.failed_steps.values()]
            ),
        )
        # The run as the engine saw it, kept current in memory: its hop count and spend.
        self.run = copy.copy(recording.run)
        self.run.release_id, self.run.hop_count, self.run.spent = target.release_id, 0, {}
        self.results: dict[str, Any] = {}
        self.visits: dict[str, int] = {}
        self.completed = 0
        self.agents = {slug: tuple(facts) for slug, *facts in acting_agents()}

    def walk(self) -> ReplayReport:
        state = self.target.first_state
        for _ in range(_STEP_LIMIT):
            try:
                state = self._step(state)
            except _Redirect as redirect:  # a recorded rejection sends the run to another state
                state = redirect.state
            except _Stop as stop:
                self._end(stop)
                return self.report
        self._end(_Stop("failed", f"no end after {_STEP_LIMIT} steps"))
        return self.report

    def _end(self, stop: _Stop) -> None:
        report, recording = self.report, self.recording
        report.end, report.error = stop.end, stop.error
        report.end_state = self.run.current_state
        report.replayed_cost_usd = sum(step.cost_usd for step in report.steps)
        extra = len(recording.steps) - self.completed
        if stop.unrecorded:
            if (
                self.ask_models
                or report.end_state != recording.end_state
                or recording.end not in UNRECORDED_ENDS
            ):
                report.incomplete(stop.error)
                return
            # The run stopped at a step whose answer it never recorded: so does its replay.
            report.end = recording.end
        if extra > 0:
            report.differ(f"the original went on for {extra} more step(s) from {report.end_state}")
        elif report.end != recording.end:
            report.differ(f"ends {report.end} where the original ended {recording.end}")

    def _step(self, state: str) -> str:
        self.run.current_state = state
        if state not in {step["name"] for step in self.target.definition["steps"]}:
            raise _Stop("failed", f"state {state!r} is not in workflow {self.target.release_id}")
        step = self.target.step(state)
        sequence = self.completed + 1
        visit = self.visits.get(state, 0)
        self.visits[state] = visit + 1
        recorded_visits = self.recording.outputs_of(state)
        if visit < len(recorded_visits):
            recorded = recorded_visits[visit]
        else:  # the visit that failed, if the run failed here after the step answered
            recorded = self.recording.failed_steps.get(state) if visit == len(recorded_visits) else None
        original = self.recording.steps[sequence - 1] if sequence <= len(self.recording.steps) else None
        now = self._clock(recorded or original).timestamp()
        facts = merged_facts(self.run, self.results)
        if "map" in step:
            report = self._recorded(sequence, state, "map", recorded)
        elif "tool" in step:
            report = self._tool(sequence, state, step, facts, recorded, now)
        elif "agent" in step:
            report = self._agent(sequence, state, step, facts, recorded)
        else:
            report = self._gate(sequence, state, step, facts)
        proposed = report.output.get("next") if "next" in step and isinstance(report.output, dict) else None
        next_state, why = choose_next(
            step,
            self.target.allowed_next(state),
            merged_facts(self.run, {**self.results, state: report.output}),
            proposed,
        )
        if not next_state:
            self._add_partial(report)
            raise _Stop("failed", f"forbidden transition: {why}")
        increments = {"tokens": report.tokens, "cost_usd": report.cost_usd, "tool_calls": report.tool_calls}
        spent = add_spent(self.run.spent, {key: value for key, value in increments.items() if value})
        if next_state not in (FAIL, HUMAN):
            end_clock = recorded.finished_at.timestamp() if recorded else now
            self._transition(report, state, next_state, spent, end_clock)
        report.next_state, report.why = next_state, why
        self._compare(report, original)
        self.report.steps.append(report)
        self.completed += 1
        self.results[state] = report.output
        self.run.hop_count += 1
        self.run.spent = spent
        if next_state == END:
            raise _Stop("succeeded")
        if next_state == FAIL:
            raise _Stop("failed", f"{state} routed the run to fail")
        if next_state == HUMAN:
            return self._human(state, {"handoff": state})
        return next_state

    def _clock(self, recorded: RecordedStep | None) -> datetime:
        """The database time the original step started at: policy sees the clock it saw."""
        if recorded is not None:
            return recorded.started_at
        steps = self.recording.steps
        return steps[-1].finished_at if steps else self.run.created_at

    # -- the kinds of step --------------------------------------------------------------

    def _recorded(self, sequence: int, state: str, kind: str, recorded: RecordedStep | None) -> StepReport:
        output = self._recorded_output(state, recorded)
        details = recorded.details if recorded else {}
        return StepReport(
            sequence,
            state,
            kind,
            "recording",
            output=output,
            cost_usd=float(details.get("cost_usd") or 0),
            tokens=int(details.get("tokens") or 0),
        )

    def _recorded_output(self, state: str, recorded: RecordedStep | None) -> Any:
        if recorded is not None:
            return recorded.output
        raise _Stop("incomplete", f"the recording holds no answer for {state}", unrecorded=True)

    def _tool(self, sequence, state, step, facts, recorded, now) -> StepReport:
        spec = self.target.tool(step["tool"])
        try:
            args = tool_arguments(step, spec, facts)
        except (EvaluationError, ExpressionError) as error:
            raise _Stop("failed", f"cannot build the arguments of {step['tool']}: {error}") from error
        agent_slug = step.get("agent") or self.target.definition.get("run_as")
        document = tool_decision_input(
            self.run, self.target, step, spec, self.agents.get(agent_slug), agent_slug, args, facts, now
        )
        recorded_decision = self.recording.last_decision("tool.call", step["tool"])
        if recorded_decision and not self.ask_models:
            # Deterministic: the agent as it was when the run called the tool, not as it is now.
            document["agent"] = recorded_decision.input.get("agent", document["agent"])
        decision = self._decide("tool.call", document)
        report = StepReport(sequence, state, "tool", "recording", decisions=[decision])
        if not decision["allow"]:
            self._add_partial(report)
            raise _Stop("failed", f"policy denied {step['tool']}: {'; '.join(decision['reasons'])}")
        if decision["require_approval"]:
            self._approved_or_stop(report, state, {"tool": step["tool"], "args": args})
        report.output = self._recorded_output(state, recorded)
        # A call answered by the ledger (a replayed or reconciled effect) spent no tool call.
        details = recorded.details if recorded else {}
        report.tool_calls = 0 if details.get("replayed") or details.get("reconciled") else 1
        return report

    def _agent(self, sequence, state, step, facts, recorded) -> StepReport:
        key = digest({"replay": str(self.run.pk), "state": state, "visit": self.visits[state]})
        _, requests = model_requests(self.target, step, {**facts, "results": self.results}, key)
        if recorded is not None and not self._model_changed(step, requests, recorded):
            return self._recorded(sequence, state, "model", recorded)
        if not self.ask_models:
            if recorded is not None:  # deterministic: the recording answers, and the change is shown
                report = self._recorded(sequence, state, "model", recorded)
                report.differences.append("the prompt sent to the model differs from the recorded one")
                return report
            return self._recorded(sequence, state, "model", None)
        try:
            reply = providers.complete_with_fallback(requests)
        except providers.ProviderError as error:
            raise _Stop("incomplete", f"the model of {state} failed: {error}", unrecorded=True) from error
        self.report.model_calls += 1
        return StepReport(
            sequence,
            state,
            "model",
            f"model {reply.config_name}",
            output=reply.output,
            cost_usd=reply.cost_usd,
            tokens=reply.prompt_tokens + reply.completion_tokens,
        )

    def _model_changed(self, step: dict, requests: list, recorded: RecordedStep) -> bool:
        """Whether the model would be asked something else than the run asked it."""
        recorded_prompt = recorded.details.get("prompt_digest")
        if recorded_prompt and recorded_prompt != digest(requests[0].prompt):
            return True
        binding = self.original.agents.get(step["agent"], {})
        before = self.original.model_chain(binding.get("model_config", "")) if binding else []
        now = [(request.config_name, request.config) for request in requests]
        return digest(before) != digest(now)

    def _gate(self, sequence, state, step, facts) -> StepReport:
        fired = gate_conditions_fired(step, facts)
        report = StepReport(sequence, state, "gate", "evaluated", output={"approval_required": False})
        if fired:
            self._approved_or_stop(report, state, gate_proposed_action(step, fired, facts))
            report.output = {"approval_required": True, "approved": True}
        return report

    # -- decisions ------------------------------------------------------------------------

    def _approved_or_stop(self, report: StepReport, state: str, proposed: dict) -> None:
        """Go on only if a person approved exactly this action in the original run."""
        verdict = self.recording.human_decision(state, proposed)
        if verdict == "approved":
            report.source = "recorded approval"
            return
        self._add_partial(report)
        if verdict is None:
            raise _Stop("waiting_approval", f"{state} needs an approval the original run never asked for")
        self._follow_rejection(state, verdict)

    def _human(self, state: str, proposed: dict) -> str:
        verdict = self.recording.human_decision(state, proposed)
        if verdict == "approved":
            raise _Stop("succeeded")
        if verdict is None:
            raise _Stop("waiting_approval", f"{state} handed the case to a human")
        raise _Stop("rejected", f"the hand-off at {state} was {verdict}")

    def _follow_rejection(self, state: str, verdict: str) -> None:
        on_reject = self.target.step(state).get("on_reject", "")
        if on_reject in ("", "end"):
            raise _Stop("rejected", f"the request for {state} was {verdict}")
        if on_reject == "fail":
            raise _Stop("failed", f"the request for {state} was {verdict}")
        raise _Redirect(on_reject)

    def _decide(self, point: str, document: dict) -> dict:
        decision: Decision = policy_evaluate(point, document, bundle=self.target.policy)
        return {
            "point": point,
            "subject": decision_subject(point, document),
            "allow": decision.allow,
            "require_approval": decision.require_approval,
            "reasons": list(decision.reasons),
        }

    def _transition(self, report: StepReport, state: str, next_state: str, spent: dict, now: float) -> None:
        allowed = self.target.allowed_next(state)
        document = transition_decision_input(
            self.run, self.target, state=state, next_state=next_state, allowed=allowed, spent=spent, now=now
        )
        decision = self._decide("step.transition", document)
        report.decisions.append(decision)
        if not decision["allow"]:
            report.next_state = next_state
            self._add_partial(report)
            raise _Stop(
                "failed", f"transition {state} -> {next_state} denied: {'; '.join(decision['reasons'])}"
            )

    def _add_partial(self, report: StepReport) -> None:
        """A step that stopped the run is shown too, with the decisions that stopped it."""
        original = (
            self.recording.steps[report.sequence - 1]
            if report.sequence <= len(self.recording.steps)
            else None
        )
        self._compare(report, original, completed=False)
        self.report.steps.append(report)

    # -- comparing with the original ----------------------------------------------------------

    def _compare(self, report: StepReport, original: RecordedStep | None, *, completed: bool = True) -> None:
        for decision in report.decisions:
            before = self.recording.last_decision(decision["point"], decision["subject"])
            if before is None:
                continue
            was = _verdict(before.allow, before.require_approval)
            now = _verdict(decision["allow"], decision["require_approval"])
            decision["original"] = before.as_dict()
            if was != now:
                self.report.changed_decisions += 1
                report.differences.append(f"policy {decision['point']} {decision['subject']}: {was} -> {now}")
        if original is None:
            if completed or self.recording.end_state != report.state:
                report.differences.append("the original run did not get this far")
        else:
            report.original = _as_original(original)
            if original.state != report.state:
                report.differences.append(f"state {original.state} -> {report.state}")
            elif completed:
                if digest(original.output) != digest(report.output):
                    report.differences.append("output: " + _output_difference(original.output, report.output))
                if original.next_state != report.next_state:
                    report.differences.append(f"next state {original.next_state} -> {report.next_state}")
                if round(report.original["cost_usd"] - report.cost_usd, 6):
                    report.differences.append(f"cost {report.original['cost_usd']} -> {report.cost_usd} USD")
        if report.differences:
            self.report.differ(f"step {report.sequence} ({report.state}): {report.differences[0]}")


class _Redirect(Exception):
    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


def _verdict(allow: bool, require_approval: bool) -> str:
    if not allow:
        return "deny"
    return "allow with approval" if require_approval else "allow"


_MISSING = object()


def _as_original(step: RecordedStep) -> dict:
    """The recorded step as the report shows it beside the replayed one."""
    return {
        "state": step.state,
        "next_state": step.next_state,
        "why": step.why,
        "output": step.output,
        "output_digest": digest(step.output),
        "cost_usd": float(step.details.get("cost_usd") or 0),
        "tokens": int(step.details.get("tokens") or 0),
    }


def _output_difference(before: Any, after: Any) -> str:
    if isinstance(before, dict) and isinstance(after, dict):
        changed = sorted(
            k for k in before.keys() | after.keys() if before.get(k, _MISSING) != after.get(k, _MISSING)
        )
        return "changed " + ", ".join(changed[:8]) + ("…" if len(changed) > 8 else "")
    return "changed"


def replay_builtin(recording: Recording) -> ReplayReport:
    """Built-in workflows are code: their steps run again on the recorded results and must
    give the recorded outputs."""
    run = recording.run
    spec = workflow_spec(run.workflow)
    report = ReplayReport(original_end=recording.end, original_error=recording.error)
    results: dict[str, Any] = {}
    step = spec.first_step if spec else None
    while step is not None:
        sequence = len(report.steps) + 1
        original = recording.steps[sequence - 1] if sequence <= len(recording.steps) else None
        context = StepContext(
            run_id=str(run.pk), case_id=run.case_id, original_input=run.input, results=results
        )
        try:
            output = step.handler(context)
        except Exception as error:  # the step's own code failing is what the run recorded too
            report.end, report.error = "failed", f"{type(error).__name__}: {error}"
            break
        next_state = step.next[0] if step.next else None
        entry = StepReport(
            sequence, step.name, "code", "evaluated", next_state=next_state or END, output=output
        )
        if original is None:
            entry.differences.append("the original run did not get this far")
        else:
            entry.original = {**_as_original(original), "next_state": original.next_state or END}
            if original.state != step.name:
                entry.differences.append(f"state {original.state} -> {step.name}")
            elif digest(original.output) != digest(output):
                entry.differences.append("output: " + _output_difference(original.output, output))
        if entry.differences:
            report.differ(f"step {sequence} ({step.name}): {entry.differences[0]}")
        report.steps.append(entry)
        results[step.name] = output
        step = spec.step(next_state) if next_state else None
        report.end = report.end or ("succeeded" if step is None else "")
    report.end_state = report.steps[-1].state if report.steps else ""
    if report.end != recording.end:
        report.differ(f"ends {report.end} where the original ended {recording.end}")
    return report
