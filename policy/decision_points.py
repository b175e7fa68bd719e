"""The decision points: what each one is asked (a versioned input document) and what it answers.

Every decision, whatever the point, answers `{allow, require_approval, approvers?, reasons,
obligations?}`. Inputs carry everything a rule needs, including the current time from the
database, so that a recorded decision replays to the same answer.
"""

from dataclasses import dataclass

from jsonschema import Draft202012Validator

from controlplane.compiled_schemas import Check, compile_schema

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

# --- Schemas compiled to checks (refused documents are explained by the validators above) ---

_CHECKS = {name: compile_schema(point.input_schema) for name, point in POINTS.items()}
RESULT_ACCEPTS = compile_schema(RESULT_SCHEMA)
