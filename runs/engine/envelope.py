"""The task envelope: what every step is handed, validated at every boundary (version 1).

The original input always travels unchanged; step results travel by reference when large.
"""

from typing import Any

from django.conf import settings
from jsonschema import Draft202012Validator

from controlplane.canonical import canonical_json, digest
from controlplane.compiled_schemas import compile_schema

from ..models import Payload, Run

ENVELOPE_VERSION = 1
_BUDGET = {
    "type": "object",
    "properties": {k: {"type": "number", "minimum": 0} for k in ("tokens", "tool_calls", "cost_usd")},
    "additionalProperties": False,
}
ENVELOPE_SCHEMA = {
    "type": "object",
    "required": [
        "envelope_version",
        "trace_id",
        "task_id",
        "run_id",
        "workflow",
        "workflow_version",
        "release_id",
        "case_id",
        "original_input",
        "sensitivity",
        "budget",
        "spent",
        "hop_count",
        "allowed_actions",
        "results",
        "state",
    ],
    "additionalProperties": False,
    "properties": {
        "envelope_version": {"const": ENVELOPE_VERSION},
        "trace_id": {"type": "string"},
        "task_id": {"type": "string"},
        "run_id": {"type": "string"},
        "workflow": {"type": "string"},
        "workflow_version": {"type": "string"},
        "release_id": {"type": "string"},
        "case_id": {"type": "string", "minLength": 1},
        "original_input": {"type": "object"},
        "intent": {"type": ["string", "null"]},
        "classification": {"type": ["string", "null"]},
        "confidence": {"type": ["number", "null"]},
        "sensitivity": {"enum": ["public", "internal", "confidential", "restricted"]},
        "deadline": {"type": ["string", "null"]},
        "budget": _BUDGET,
        "spent": _BUDGET,
        "allowed_actions": {"type": "array", "items": {"type": "string"}},
        "hop_count": {"type": "integer", "minimum": 0},
        "approval_conditions": {"type": "array", "items": {"type": "string"}},
        "results": {"type": "object"},
        "state": {"type": "string"},
        "source_agent": {"type": ["string", "null"]},
        "target_agent": {"type": ["string", "null"]},
        "branch": {
            "type": "object",
            "required": ["index", "item"],
            "additionalProperties": False,
            "properties": {"index": {"type": "integer", "minimum": 0}, "item": {}},
        },
    },
}
ENVELOPE_VALIDATOR = Draft202012Validator(ENVELOPE_SCHEMA)  # explains a refused envelope
ENVELOPE_ACCEPTS = compile_schema(ENVELOPE_SCHEMA)  # checks every envelope


def build_envelope(
    run: Run,
    results: dict,
    carried: dict,
    *,
    state: str,
    allowed: list[str],
    step: dict,
    source_agent: str | None,
) -> dict:
    """`results`: each completed step's output, as conditions read it; `carried`: the same as
    the checkpoints store it (a large one by reference), which is what the envelope holds."""
    facts = merged_facts(run, results)
    return {
        "envelope_version": ENVELOPE_VERSION,
        "trace_id": run.trace_id,
        "task_id": str(run.pk),
        "run_id": str(run.pk),
        "workflow": run.workflow,
        "workflow_version": run.workflow_version,
        "release_id": run.release_id,
        "case_id": run.case_id,
        "original_input": run.input,
        "intent": facts.get("intent") if isinstance(facts.get("intent"), str) else None,
        "classification": run.sensitivity,
        "confidence": facts.get("confidence") if isinstance(facts.get("confidence"), int | float) else None,
        "sensitivity": run.sensitivity,
        "deadline": run.deadline.isoformat() if run.deadline else None,
        "budget": run.budget,
        "spent": run.spent,
        "allowed_actions": allowed,
        "hop_count": run.hop_count,
        "approval_conditions": step.get("human_if", []),
        "results": dict(carried),
        "state": state,
        "source_agent": source_agent,
        "target_agent": step.get("agent"),
    }


def envelope_problems(envelope: dict) -> list[str]:
    if ENVELOPE_ACCEPTS(envelope):
        return []
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
        for e in ENVELOPE_VALIDATOR.iter_errors(envelope)
    ]


def merged_facts(run: Run, results: dict) -> dict[str, Any]:
    """What conditions and arguments can refer to: the case, its input, then each step's output."""
    facts: dict[str, Any] = {"case_id": run.case_id, **run.input}
    for output in results.values():
        if isinstance(output, dict):
            facts.update(output)
    return facts


def by_reference(output: Any) -> Any:
    """Large outputs travel as {"$ref": digest, "size": bytes}; the value is stored once."""
    size = len(canonical_json(output))
    if size <= settings.RUN_PAYLOAD_INLINE_BYTES:
        return output
    key = digest(output)
    Payload.objects.get_or_create(digest=key, defaults={"content": output, "size": size})
    return {"$ref": key, "size": size}


def resolve(value: Any) -> Any:
    if Payload.is_reference(value):
        return Payload.objects.get(pk=value["$ref"]).content
    return value
