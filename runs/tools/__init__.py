"""Tool calls that take effect exactly once, can be checked after a failure, and can be undone.

Every call carries an idempotency key; the system of record runs a key's effect once and
replays its reply afterwards, so retrying with the same key is safe. The exceptions say
what a failed call means for the effect: `ToolRejected` and `ToolUnavailable` mean it did
not happen; `ToolOutcomeUnknown` means it may have, and the engine must `reconcile()`
before it retries, so that nothing is done twice. `compensate()` undoes an effect with
the tool's compensation tool. The transports (`sandbox`, `http`) live in submodules.
"""

from dataclasses import dataclass
from typing import Protocol

from jsonschema import Draft202012Validator
from opentelemetry.trace import Span

from controlplane.telemetry import span
from registry.artifact_kinds import json_path

_RESULT_MISMATCH = "{}: result outside result_schema (its effect, if any, did happen)"


@dataclass(frozen=True)
class ToolCall:
    tool: str
    spec: dict  # the tool artifact's content
    args: dict
    idempotency_key: str
    timeout_s: float = 10.0


@dataclass(frozen=True)
class ToolResult:
    result: dict
    effect_id: str  # the system of record's id for the effect, e.g. "case-update:42"
    replayed: bool  # the key was known: this is the earlier reply and no new effect happened


class ToolError(Exception):
    """A call that returned no result; `retryable` says whether calling again can help."""

    retryable = False


class ToolRejected(ToolError):
    """Refused and not done (4xx, arguments outside args_schema, an unknown case): do not retry.

    One case differs: a result outside result_schema means the effect did happen but broke the
    tool's contract. Then `effect_id` names the effect, so the engine can compensate it.
    """

    def __init__(self, message: str, *, effect_id: str = "") -> None:
        super().__init__(message)
        self.effect_id = effect_id


class ToolUnavailable(ToolError):
    """Not done and safe to retry: the request never reached the system, or it refused to serve it."""

    retryable = True


class ToolOutcomeUnknown(ToolError):
    """The request was sent but no reply came back: the effect may have happened.

    Retrying with the same key is safe against a system that honours keys, but the engine
    must reconcile first, to learn whether it happened and to record its effect id.
    """

    retryable = True


class _Transport(Protocol):
    def invoke(self, call: ToolCall) -> ToolResult: ...

    def reconcile(self, call: ToolCall, lookup_spec: dict | None) -> ToolResult | None: ...


def invoke(call: ToolCall) -> ToolResult:
    """Check the arguments, make the call once, and check the result against the tool's schemas."""
    with _call_span(call, "invoke") as current:
        return _invoked(call, current)


def reconcile(call: ToolCall, lookup_spec: dict | None) -> ToolResult | None:
    """The reply of the effect made under `call.idempotency_key`, or None if there is none.

    `lookup_spec` is the tool's `reconcile_lookup` tool; an http one gives the URL to ask.
    A read failure raises `ToolUnavailable`: ask again later, never assume "not done".
    """
    with _call_span(call, "reconcile") as current:
        found = _transport(call.spec).reconcile(call, lookup_spec)
        if found is not None:
            _check(
                call.spec["result_schema"], found.result, _RESULT_MISMATCH.format(call.tool), found.effect_id
            )
        current.set_attributes(
            {"outcome": "found" if found else "not_found", "tool.replayed": found is not None}
        )
        return found


def compensation_call(call: ToolCall, compensation_spec: dict, original: ToolResult) -> ToolCall:
    """The call that undoes `original`; its key derives from the original's, so it runs once too."""
    return ToolCall(
        tool=call.spec.get("compensation_tool") or f"compensation of {call.tool}",
        spec=compensation_spec,
        args={**call.args, "original_effect_id": original.effect_id},
        idempotency_key=f"{call.idempotency_key}:compensate",
        timeout_s=call.timeout_s,
    )


def compensate(call: ToolCall, compensation_spec: dict, original: ToolResult) -> ToolResult:
    """Undo `original`; fails like `invoke()`, and `reconcile(compensation_call(...))` settles it."""
    undo = compensation_call(call, compensation_spec, original)
    with _call_span(undo, "compensate") as current:
        return _invoked(undo, current)


def _invoked(call: ToolCall, current: Span) -> ToolResult:
    _check(call.spec["args_schema"], call.args, f"{call.tool}: arguments outside args_schema")
    outcome = _transport(call.spec).invoke(call)
    _check(call.spec["result_schema"], outcome.result, _RESULT_MISMATCH.format(call.tool), outcome.effect_id)
    current.set_attributes({"outcome": "ok", "tool.replayed": outcome.replayed})
    return outcome


def _call_span(call: ToolCall, operation: str):
    """The span of one call; its arguments and result stay out of it (they may be personal data)."""
    return span(
        "tool.call",
        {
            "tool.name": call.tool,
            "tool.operation": operation,
            "tool.side_effect": call.spec.get("side_effect"),
            "tool.transport": call.spec.get("transport", {}).get("type"),
        },
    )


def _transport(spec: dict) -> _Transport:
    # Imported here: the transports import the types above, and `sandbox` needs the app registry.
    from . import http, sandbox

    kind = spec["transport"]["type"]
    transports: dict[str, _Transport] = {"http": http, "sandbox": sandbox}
    if kind not in transports:
        raise ToolRejected(f"unknown tool transport {kind!r}")
    return transports[kind]


def _check(schema: dict, value: object, what: str, effect_id: str = "") -> None:
    problems = [
        f"{json_path(error.absolute_path)}: {error.message}"
        for error in Draft202012Validator(schema).iter_errors(value)
    ]
    if problems:
        raise ToolRejected(f"{what}: {'; '.join(problems)}", effect_id=effect_id)
