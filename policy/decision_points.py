"""The decision points: what each one is asked (a versioned input document) and what it answers.

Every decision, whatever the point, answers `{allow, require_approval, approvers?, reasons,
obligations?}`. Inputs carry everything a rule needs, including the current time from the
database, so that a recorded decision replays to the same answer.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

INPUT_VERSION = 1
SIDE_EFFECT = {"enum": ["read", "write", "irreversible"]}
CLASSIFICATION = {"enum": ["public", "internal", "confidential", "restricted"]}
_STR = {"type": "string"}
_NUM = {"type": "number"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_STRS = {"type": "array", "items": _STR}
_BUDGET = {
    "type": "object",
    "properties": {"tokens": _NUM, "tool_calls": _NUM, "cost_usd": _NUM},
    "additionalProperties": False,
}
_RUN = {
    "type": "object",
    "required": ["id", "workflow", "hop_count", "max_hops", "budget", "spent", "now", "deadline"],
    "properties": {
        "id": _STR,
        "workflow": _STR,
        "release_id": _STR,
        "hop_count": _INT,
        "max_hops": _INT,
        "budget": _BUDGET,
        "spent": _BUDGET,
        "now": _NUM,
        "deadline": {"type": ["number", "null"]},
        "sensitivity": CLASSIFICATION,
    },
}
_AGENT = {
    "type": "object",
    "required": ["slug", "status", "allowed_tools"],
    "properties": {
        "slug": _STR,
        "status": _STR,
        "data_classification": CLASSIFICATION,
        "allowed_tools": {"type": "object", "additionalProperties": SIDE_EFFECT},
        "identity": _STR,
    },
}
_SUBJECT = {
    "type": "object",
    "required": ["username", "roles"],
    "properties": {"username": _STR, "roles": _STRS, "kind": {"enum": ["user", "agent", "system"]}},
}


def _document(point: str, required: list[str], properties: dict) -> dict:
    return {
        "type": "object",
        "required": ["decision_point", "version", *required],
        "properties": {"decision_point": {"const": point}, "version": {"const": INPUT_VERSION}, **properties},
    }


@dataclass(frozen=True)
class DecisionPoint:
    name: str
    entrypoint: str  # the bundle rule that answers, as `<package path>/<rule>`
    input_schema: dict
    sensitive: tuple[tuple[str, ...], ...] = ()  # input paths redacted in the decision log

    @property
    def validator(self) -> Draft202012Validator:
        """The reference validator, for the messages that explain a refused input."""
        return _VALIDATORS[self.name]

    @property
    def accepts(self) -> "Check":
        """The input schema compiled to one check: what every decision runs first."""
        return _CHECKS[self.name]


POINTS = {
    point.name: point
    for point in (
        DecisionPoint(
            "run.start",
            "baton/run_start/decision",
            _document(
                "run.start",
                ["subject", "workflow", "task"],
                {
                    "subject": _SUBJECT,
                    "workflow": {
                        "type": "object",
                        "required": ["name", "release_id"],
                        "properties": {
                            "name": _STR,
                            "release_id": _STR,
                            "channel": _STR,
                            "agents": {"type": "array", "items": _AGENT},
                        },
                    },
                    "task": {
                        "type": "object",
                        "required": ["case_id"],
                        "properties": {
                            "case_id": _STR,
                            "sensitivity": CLASSIFICATION,
                            "budget": _BUDGET,
                            "deadline": {"type": ["number", "null"]},
                            "input": {},
                        },
                    },
                },
            ),
            sensitive=(("task", "input"),),
        ),
        DecisionPoint(
            "step.transition",
            "baton/step_transition/decision",
            _document(
                "step.transition",
                ["run", "from", "to", "allowed_next"],
                {
                    "run": _RUN,
                    "from": _STR,
                    "to": _STR,
                    "allowed_next": _STRS,
                    "proposed_by": _STR,
                },
            ),
        ),
        DecisionPoint(
            "tool.call",
            "baton/tool_call/decision",
            _document(
                "tool.call",
                ["run", "agent", "tool"],
                {
                    "run": _RUN,
                    "agent": _AGENT,
                    "tool": {
                        "type": "object",
                        "required": ["name", "side_effect"],
                        "properties": {"name": _STR, "side_effect": SIDE_EFFECT, "external": _BOOL},
                    },
                    "args": {"type": "object"},
                    "facts": {"type": "object", "properties": {"amount": _NUM, "confidence": _NUM}},
                },
            ),
            sensitive=(("args",),),
        ),
        DecisionPoint(
            "approval.decide",
            "baton/approval_decide/decision",
            _document(
                "approval.decide",
                ["reviewer", "request", "decision"],
                {
                    "reviewer": {
                        "type": "object",
                        "required": ["username", "groups"],
                        "properties": {"username": _STR, "groups": _STRS, "clearance": CLASSIFICATION},
                    },
                    "request": {
                        "type": "object",
                        "required": ["requested_by", "agent", "approver_group"],
                        "properties": {
                            "requested_by": _STR,
                            "agent": _STR,
                            "approver_group": _STR,
                            "sensitivity": CLASSIFICATION,
                        },
                    },
                    "decision": {"enum": ["approve", "reject"]},
                },
            ),
        ),
        DecisionPoint(
            "release.promote",
            "baton/release_promote/decision",
            _document(
                "release.promote",
                ["release", "channel", "actor"],
                {
                    "release": {
                        "type": "object",
                        "required": ["id", "workflow", "author", "evaluations", "signoffs"],
                        "properties": {
                            "id": _STR,
                            "workflow": _STR,
                            "author": _STR,
                            "min_score": _NUM,
                            "evaluations": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["suite", "score"],
                                    "properties": {"suite": _STR, "score": _NUM},
                                },
                            },
                            "signoffs": _STRS,
                            "retired_agents": _STRS,
                        },
                    },
                    "channel": {
                        "type": "object",
                        "required": ["name", "gated"],
                        "properties": {"name": _STR, "gated": _BOOL, "mode": _STR},
                    },
                    "actor": _SUBJECT,
                },
            ),
        ),
        DecisionPoint(
            "agent.lifecycle",
            "baton/agent_lifecycle/decision",
            _document(
                "agent.lifecycle",
                ["agent", "to", "actor"],
                {
                    "agent": {
                        "type": "object",
                        "required": ["slug", "status"],
                        "properties": {
                            "slug": _STR,
                            "status": _STR,
                            "has_owner": _BOOL,
                            "has_runbook": _BOOL,
                            "has_slos": _BOOL,
                        },
                    },
                    "to": _STR,
                    "reason": _STR,
                    "actor": _SUBJECT,
                },
            ),
        ),
    )
}
_VALIDATORS = {name: Draft202012Validator(point.input_schema) for name, point in POINTS.items()}

RESULT_SCHEMA = {
    "type": "object",
    "required": ["allow", "require_approval", "reasons"],
    "properties": {
        "allow": _BOOL,
        "require_approval": _BOOL,
        "approvers": {"type": "array", "items": _STR},
        "quorum": {"type": "integer", "minimum": 1},
        "reasons": {"type": "array", "items": _STR},
        "obligations": {"type": "object"},
    },
}
RESULT_VALIDATOR = Draft202012Validator(RESULT_SCHEMA)

# --- Schemas compiled to checks --------------------------------------------------------------
#
# jsonschema walks a schema anew for every document (about 100 µs for a tool.call input); a
# decision cannot afford that. These schemas use a handful of keywords, so each is compiled
# once into nested closures that answer exactly as Draft 2020-12 validation does for JSON
# values (dict, list, str, int, float, bool, None). A keyword the compiler does not know is
# refused when the schema is compiled, never ignored. Refused documents are explained by the
# reference validator.

Check = Callable[[Any], bool]

_TYPE_CHECKS: dict[str, Check] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "integer": lambda value: (
        (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer())
    ),
}
_KEYWORDS = {"type", "enum", "const", "minimum", "required", "properties", "additionalProperties", "items"}


def _accept_all(value: Any) -> bool:
    return True


def _same(value: Any, constant: Any) -> bool:
    """JSON Schema equality of scalars: booleans are not numbers (true != 1), 1 == 1.0."""
    if isinstance(value, bool) or isinstance(constant, bool):
        return value is constant
    return value == constant


def compile_schema(schema: dict) -> Check:
    unknown = set(schema) - _KEYWORDS
    if unknown:
        raise ValueError(f"cannot compile schema keywords {sorted(unknown)}")
    checks: list[Check] = []
    names = schema.get("type", [])
    names = names if isinstance(names, list) else [names]
    has_object_keywords = bool({"required", "properties", "additionalProperties"} & set(schema))
    if has_object_keywords:
        checks.append(_compile_object(schema, must_be_object=names == ["object"]))
    if names and not (has_object_keywords and names == ["object"]):
        type_checks = [_TYPE_CHECKS[name] for name in names]
        checks.append(type_checks[0] if len(type_checks) == 1 else lambda v: any(t(v) for t in type_checks))
    if "enum" in schema or "const" in schema:
        checks.append(_compile_constants(schema["enum"] if "enum" in schema else [schema["const"]]))
    if "minimum" in schema:
        minimum, is_number = schema["minimum"], _TYPE_CHECKS["number"]
        checks.append(lambda v: not is_number(v) or v >= minimum)
    if "items" in schema:
        item_check = compile_schema(schema["items"])
        checks.append(lambda v: not isinstance(v, list) or all(item_check(item) for item in v))
    return _all_of(checks)


def _all_of(checks: list[Check]) -> Check:
    if not checks:
        return _accept_all
    first, *rest = checks
    if not rest:
        return first
    remainder = _all_of(rest)
    return lambda v: first(v) and remainder(v)


def _compile_constants(constants: list) -> Check:
    if any(isinstance(constant, dict | list) for constant in constants):
        raise ValueError("cannot compile object or array constants")
    if all(isinstance(constant, str) for constant in constants):
        strings = frozenset(constants)
        return lambda v: isinstance(v, str) and v in strings
    return lambda v: any(_same(v, constant) for constant in constants)


def _compile_object(schema: dict, *, must_be_object: bool) -> Check:
    required = tuple(schema.get("required", ()))
    properties = {key: compile_schema(sub) for key, sub in schema.get("properties", {}).items()}
    additional = schema.get("additionalProperties", True)
    other = compile_schema(additional) if isinstance(additional, dict) else None
    others_allowed = additional is not False

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return not must_be_object
        for key in required:
            if key not in value:
                return False
        for key, item in value.items():
            property_check = properties.get(key)
            if property_check is not None:
                if not property_check(item):
                    return False
            elif not others_allowed or (other is not None and not other(item)):
                return False
        return True

    return check


_CHECKS = {name: compile_schema(point.input_schema) for name, point in POINTS.items()}
RESULT_ACCEPTS = compile_schema(RESULT_SCHEMA)
