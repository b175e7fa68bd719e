"""Workflow definitions: parse YAML or JSON, normalise, and find every problem with its path.

The definition is a state machine. Each step names what may run in it (an agent, a tool,
or a human gate) and the states it may hand over to; a transition that is not declared
here can never happen at run time. Problems are reported all at once, each with a path
such as `$.steps[3].next[1]`, and nothing is published while any remains.

A `map` step fans out: it runs its agent or tool once per element of a list (an expression
over the run's facts), at most `concurrency` at once, and hands the ordered branch outputs
to its next state, the reduce step.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from controlplane.strict_json import TOO_DEEP, StrictJSONError, refuse_unstorable

from .artifact_kinds import NAME_PATTERN, SIDE_EFFECTS, Problem, json_path, schema_problems
from .expressions import ExpressionError, parse

END, HUMAN, FAIL = "end", "human", "fail"
RESERVED_TARGETS = (END, HUMAN, FAIL)
_NAME = {"type": "string", "pattern": NAME_PATTERN}
_STEP_NAME = {"type": "string", "pattern": r"^[a-z][a-z0-9_]{0,63}$"}
_TARGET = {"type": "string", "minLength": 1, "maxLength": 64}
_CONDITION = {"type": "string", "minLength": 1, "maxLength": 500}
MAX_MAP_CONCURRENCY = 50
MAX_MAP_ITEMS = 1000
_MAP_SCHEMA = {
    "type": "object",
    "required": ["over"],
    "additionalProperties": False,
    "properties": {
        "over": _CONDITION,
        "as": {"type": "string", "pattern": r"^[a-z][a-z0-9_]{0,63}$"},
        "concurrency": {"type": "integer", "minimum": 1, "maximum": MAX_MAP_CONCURRENCY},
        "agent": _NAME,
        "tool": _NAME,
        "prompt": _NAME,
        "model_config": _NAME,
        "args": {"type": "object"},
        "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 100},
        "reconcile_before_retry": {"type": "boolean"},
        "compensate": _NAME,
        "output_schema": {"type": "object"},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
    },
}

_STEP_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": _STEP_NAME,
        "description": {"type": "string", "maxLength": 2000},
        "agent": _NAME,
        "tool": _NAME,
        "corpus": _NAME,
        "prompt": _NAME,
        "model_config": _NAME,
        "human_if": {"type": "array", "items": _CONDITION, "minItems": 1, "maxItems": 20},
        "next": {"type": "array", "items": _TARGET, "minItems": 1, "uniqueItems": True, "maxItems": 20},
        "route": {
            "type": "array",
            "maxItems": 20,
            "items": {
                "type": "object",
                "required": ["if", "to"],
                "additionalProperties": False,
                "properties": {"if": _CONDITION, "to": _TARGET},
            },
        },
        "on_error": _TARGET,
        "on_reject": _TARGET,
        "approval_timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 30 * 86400},
        "on_expire": {"enum": ["escalate", "reject", "fail"]},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
        "retry": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 20},
                "backoff_s": {"type": "number", "minimum": 0, "maximum": 3600},
            },
        },
        "token_budget": {"type": "integer", "minimum": 1},
        "max_results": {"type": "integer", "minimum": 1, "maximum": 1000},
        "min_score": {"type": "number", "minimum": 0, "maximum": 1},
        "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 100},
        "reconcile_before_retry": {"type": "boolean"},
        "compensate": _NAME,
        "output_schema": {"type": "object"},
        "args": {"type": "object"},
        "map": _MAP_SCHEMA,
    },
}
_DEFINITION_SCHEMA = {
    "type": "object",
    "required": ["workflow", "version", "steps"],
    "additionalProperties": False,
    "properties": {
        "workflow": _NAME,
        "version": {"type": "string", "minLength": 1, "maxLength": 50},
        "description": {"type": "string", "maxLength": 5000},
        "run_as": _NAME,
        "steps": {"type": "array", "minItems": 1, "maxItems": 100, "items": _STEP_SCHEMA},
        "limits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_hops": {"type": "integer", "minimum": 1, "maximum": 1000},
                "deadline_s": {"type": "integer", "minimum": 1},
                "max_cost_usd": {"type": "number", "minimum": 0},
                "max_tool_calls": {"type": "integer", "minimum": 0},
                "max_tokens": {"type": "integer", "minimum": 0},
            },
        },
        "evaluation": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"min_score": {"type": "number", "minimum": 0, "maximum": 1}},
        },
    },
}
_VALIDATOR = Draft202012Validator(_DEFINITION_SCHEMA)
DEFAULT_MIN_EVAL_SCORE = 0.9


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: they add nothing here and enable "billion laughs"."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases are not allowed", event.start_mark)
        return super().compose_node(parent, index)


def load_source(source: str) -> tuple[Any, list[Problem]]:
    """Parse YAML (a superset of JSON) text into data, or report where it is broken."""
    try:
        data = yaml.load(source, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        reason = getattr(error, "problem", None) or str(error)
        return None, [Problem("$", f"invalid YAML at {where}: {reason}")]
    except RecursionError:  # the YAML parser recurses once per level of nesting
        return None, [Problem("$", TOO_DEEP)]
    # Held to what the API accepts as JSON: the checks and the digest that follow recurse too.
    try:
        refuse_unstorable(data)
    except StrictJSONError as error:
        return None, [Problem("$", str(error))]
    return data, []


def normalise(data: Any) -> Any:
    """Accept the compact form `steps: [{triage: {...}}]` and return `steps: [{name: triage, ...}]`."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if isinstance(data.get("version"), int | float) and not isinstance(data.get("version"), bool):
        data["version"] = str(data["version"])
    steps = data.get("steps")
    if isinstance(steps, list):
        data["steps"] = [_normalise_step(step) for step in steps]
    return data


def _normalise_step(step: Any) -> Any:
    if isinstance(step, dict) and len(step) == 1 and "name" not in step:
        ((name, body),) = step.items()
        if isinstance(body, dict):
            return {"name": name, **body}
    return step


def structure_problems(definition: Any) -> list[Problem]:
    """Everything that can be checked from the definition alone."""
    problems = [
        Problem(json_path(error.absolute_path), error.message)
        for error in sorted(_VALIDATOR.iter_errors(definition), key=lambda e: list(e.absolute_path))
    ]
    if problems:
        return problems
    steps = definition["steps"]
    names = [step["name"] for step in steps]
    seen: set[str] = set()
    for index, step in enumerate(steps):
        path = f"$.steps[{index}]"
        if step["name"] in seen:
            problems.append(Problem(f"{path}.name", f"step {step['name']!r} is defined twice"))
        if step["name"] in RESERVED_TARGETS:
            problems.append(Problem(f"{path}.name", f"{step['name']!r} is reserved"))
        seen.add(step["name"])
        if "map" in step:
            problems += _map_problems(definition, index, path)
        elif not ({"agent", "tool", "human_if"} & step.keys()):
            problems.append(Problem(path, f"step {step['name']!r} needs an agent, a tool, human_if or map"))
        for target_path, target in _targets(step, path):
            if target not in names and target not in RESERVED_TARGETS:
                problems.append(Problem(target_path, f"transition to undefined state {target!r}"))
        for route_index, route in enumerate(step.get("route", [])):
            if route["to"] not in next_states(definition, index):
                problems.append(
                    Problem(
                        f"{path}.route[{route_index}].to",
                        f"route target {route['to']!r} is not among the step's next states",
                    )
                )
        problems += _condition_problems(step, path)
        if "output_schema" in step:
            problems += schema_problems(step["output_schema"], f"{path}.output_schema")
    if not problems:
        problems += _unreachable(definition)
    return problems


def _map_problems(definition: dict, index: int, path: str) -> list[Problem]:
    """A map step names one agent or tool inside `map`, and hands its outputs to a step."""
    step, spec = definition["steps"][index], definition["steps"][index]["map"]
    problems = []
    beside = sorted({"agent", "tool", "human_if", "args"} & step.keys())
    if beside:
        problems.append(
            Problem(f"{path}.{beside[0]}", f"a map step declares {beside[0]!r} inside `map`, not beside it")
        )
    runs = {"agent", "tool"} & spec.keys()
    if not runs:
        problems.append(Problem(f"{path}.map", "a map step needs an agent or a tool to run on each element"))
    elif runs == {"agent"} and "args" in spec:
        problems.append(Problem(f"{path}.map.args", "args are given to a tool; this map runs an agent"))
    try:
        parse(spec["over"])
    except ExpressionError as error:
        problems.append(Problem(f"{path}.map.over", f"cannot parse expression {spec['over']!r}: {error}"))
    for name, value in spec.get("args", {}).items():
        if isinstance(value, str) and value.startswith("="):
            try:
                parse(value[1:])
            except ExpressionError as error:
                problems.append(Problem(f"{path}.map.args.{name}", f"cannot parse expression: {error}"))
    names = {other["name"] for other in definition["steps"]}
    if not any(target in names for target in next_states(definition, index)):
        where = f"{path}.next" if "next" in step else path
        reason = f"map step {step['name']!r} needs a next state (a step) to reduce its branch outputs"
        problems.append(Problem(where, reason))
    if "output_schema" in spec:
        problems += schema_problems(spec["output_schema"], f"{path}.map.output_schema")
    return problems


def next_states(definition: dict, index: int) -> list[str]:
    """The states step `index` may hand over to; by default the following step (or the end)."""
    step = definition["steps"][index]
    if "next" in step:
        return list(step["next"])
    following = definition["steps"][index + 1 :]
    return [following[0]["name"]] if following else [END]


def _targets(step: dict, path: str) -> list[tuple[str, str]]:
    targets = [(f"{path}.next[{i}]", target) for i, target in enumerate(step.get("next", []))]
    targets += [(f"{path}.{key}", step[key]) for key in ("on_error", "on_reject") if key in step]
    return targets


def _condition_problems(step: dict, path: str) -> list[Problem]:
    conditions = [(f"{path}.human_if[{i}]", text) for i, text in enumerate(step.get("human_if", []))]
    conditions += [(f"{path}.route[{i}].if", route["if"]) for i, route in enumerate(step.get("route", []))]
    problems = []
    for condition_path, text in conditions:
        try:
            parse(text)
        except ExpressionError as error:
            problems.append(Problem(condition_path, f"cannot parse condition {text!r}: {error}"))
    return problems


def _unreachable(definition: dict) -> list[Problem]:
    steps = definition["steps"]
    index_of = {step["name"]: i for i, step in enumerate(steps)}
    reached, frontier = {steps[0]["name"]}, [0]
    while frontier:
        index = frontier.pop()
        step = steps[index]
        for target in [
            *next_states(definition, index),
            *(step[k] for k in ("on_error", "on_reject") if k in step),
        ]:
            if target in index_of and target not in reached:
                reached.add(target)
                frontier.append(index_of[target])
    return [
        Problem(f"$.steps[{i}]", f"state {step['name']!r} is unreachable from {steps[0]['name']!r}")
        for i, step in enumerate(steps)
        if step["name"] not in reached
    ]


@dataclass(frozen=True)
class References:
    """How to look up what a definition names: the registry now, or a release's pins."""

    agent: Callable[[str], Any]  # slug -> Agent or None
    tool: Callable[[str], dict | None]  # name -> tool content or None
    corpus: Callable[[str], dict | None]  # name -> corpus content or None


def reference_problems(definition: dict, refs: References) -> list[Problem]:
    """Unknown or retired agents, unknown tools and corpora, missing scopes and compensations."""
    problems: list[Problem] = []
    run_as = definition.get("run_as")
    if run_as:
        problems += _agent_problems(refs, run_as, "$.run_as")
    for index, step in enumerate(definition["steps"]):
        path = f"$.steps[{index}]"
        if "agent" in step:
            problems += _agent_problems(refs, step["agent"], f"{path}.agent")
        if "corpus" in step and refs.corpus(step["corpus"]) is None:
            problems.append(Problem(f"{path}.corpus", f"unknown corpus {step['corpus']!r}"))
        if "tool" in step:
            problems += _tool_step_problems(refs, step, path, acting_agent=step.get("agent") or run_as)
        spec = step.get("map", {})
        if "agent" in spec:
            problems += _agent_problems(refs, spec["agent"], f"{path}.map.agent")
        if "tool" in spec:
            acting_agent = spec.get("agent") or run_as
            problems += _tool_step_problems(refs, spec, f"{path}.map", acting_agent=acting_agent)
    return problems


def _agent_problems(refs: References, slug: str, path: str) -> list[Problem]:
    agent = refs.agent(slug)
    if agent is None:
        return [Problem(path, f"unknown agent {slug!r}")]
    if agent.status == "retired":
        return [Problem(path, f"agent {slug!r} is retired")]
    return []


def _tool_step_problems(refs: References, step: dict, path: str, acting_agent: str | None) -> list[Problem]:
    tool = refs.tool(step["tool"])
    if tool is None:
        return [Problem(f"{path}.tool", f"unknown tool {step['tool']!r}")]
    problems = []
    side_effect = tool["side_effect"]
    compensation = step.get("compensate") or tool.get("compensation_tool")
    if compensation and refs.tool(compensation) is None:
        problems.append(Problem(f"{path}.compensate", f"unknown compensation tool {compensation!r}"))
    if side_effect == "irreversible" and not compensation:
        problems.append(Problem(f"{path}.tool", f"irreversible tool {step['tool']!r} has no compensation"))
    if acting_agent is None:
        problems.append(Problem(f"{path}.tool", "a tool step needs an agent (on the step or as run_as)"))
        return problems
    agent = refs.agent(acting_agent)
    if agent is None:
        return problems  # reported where the agent is named
    scope = agent.tool_scope(step["tool"])
    if scope is None:
        problems.append(
            Problem(f"{path}.tool", f"agent {acting_agent!r} is not allowed tool {step['tool']!r}")
        )
    elif SIDE_EFFECTS.index(scope) < SIDE_EFFECTS.index(side_effect):
        problems.append(
            Problem(
                f"{path}.tool",
                f"agent {acting_agent!r} has scope {scope!r} on {step['tool']!r}, "
                f"which needs {side_effect!r}",
            )
        )
    return problems


def referenced_names(definition: dict) -> dict[str, set[str]]:
    """The agents, tools and corpora a definition uses (tools include compensations)."""
    runners = [*definition["steps"], *(step["map"] for step in definition["steps"] if "map" in step)]
    agents = {step["agent"] for step in runners if "agent" in step}
    if definition.get("run_as"):
        agents.add(definition["run_as"])
    tools = {step["tool"] for step in runners if "tool" in step}
    tools |= {step["compensate"] for step in runners if "compensate" in step}
    corpora = {step["corpus"] for step in definition["steps"] if "corpus" in step}
    return {"agent": agents, "tool": tools, "corpus": corpora}


def min_eval_score(definition: dict) -> float:
    return definition.get("evaluation", {}).get("min_score", DEFAULT_MIN_EVAL_SCORE)
