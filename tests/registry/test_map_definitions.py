"""Workflow definitions with a `map` step: accepted when whole, refused with the path of each problem."""

import copy

import pytest

from controlplane.errors import InvalidInput
from registry import workflow_definitions as wf
from registry.models import Artifact

from .test_services import publish

pytestmark = pytest.mark.django_db

SEARCH_EACH = {
    "name": "search",
    "map": {
        "over": "questions",
        "as": "question",
        "tool": "kb_search",
        "agent": "response_writer",
        "args": {"query": "=question"},
        "concurrency": 4,
    },
}
DEFINITION = {
    "workflow": "research",
    "version": "1.0.0",
    "steps": [SEARCH_EACH, {"name": "draft", "agent": "response_writer"}],
}


def definition_with(**changes) -> dict:
    """DEFINITION with `changes` applied to the map step's `map` (None removes a key)."""
    definition = copy.deepcopy(DEFINITION)
    spec = definition["steps"][0]["map"]
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return definition


def test_a_map_step_is_accepted_and_its_tool_and_agent_are_referenced(demo_registry, platform_user):
    published = publish("workflow", "research", DEFINITION, platform_user)

    assert published.created
    assert published.artifact.content["steps"][0]["map"]["over"] == "questions"
    names = wf.referenced_names(DEFINITION)
    assert "kb_search" in names["tool"] and "response_writer" in names["agent"]


def last_step_map() -> dict:
    definition = copy.deepcopy(DEFINITION)
    definition["steps"] = [definition["steps"][1], definition["steps"][0]]
    return definition


def ends_after_map() -> dict:
    definition = copy.deepcopy(DEFINITION)
    definition["steps"][0]["next"] = ["end"]
    return definition


def agent_beside_map() -> dict:
    definition = copy.deepcopy(DEFINITION)
    definition["steps"][0]["agent"] = "response_writer"
    return definition


@pytest.mark.parametrize(
    ("definition", "path", "message"),
    [
        (definition_with(over=None), "$.steps[0].map", "'over' is a required property"),
        (definition_with(concurrency=0), "$.steps[0].map.concurrency", "less than the minimum of 1"),
        (definition_with(concurrency=51), "$.steps[0].map.concurrency", "greater than the maximum of 50"),
        (definition_with(concurrency="2"), "$.steps[0].map.concurrency", "is not of type 'integer'"),
        (definition_with(tool="kb_delete"), "$.steps[0].map.tool", "unknown tool 'kb_delete'"),
        (
            definition_with(tool=None, args=None, agent="ghost"),
            "$.steps[0].map.agent",
            "unknown agent 'ghost'",
        ),
        (
            definition_with(agent="policy_checker"),
            "$.steps[0].map.tool",
            "agent 'policy_checker' is not allowed tool 'kb_search'",
        ),
        (definition_with(tool=None, agent=None, args=None), "$.steps[0].map", "needs an agent or a tool"),
        (definition_with(over="questions >>"), "$.steps[0].map.over", "cannot parse expression"),
        (
            definition_with(args={"query": "=question >"}),
            "$.steps[0].map.args.query",
            "cannot parse expression",
        ),
        (definition_with(parallel=True), "$.steps[0].map", "Additional properties are not allowed"),
        (ends_after_map(), "$.steps[0].next", "needs a next state (a step) to reduce its branch outputs"),
        (last_step_map(), "$.steps[1]", "needs a next state (a step) to reduce its branch outputs"),
        (agent_beside_map(), "$.steps[0].agent", "declares 'agent' inside `map`, not beside it"),
    ],
    ids=[
        "missing-over",
        "zero-concurrency",
        "too-much-concurrency",
        "concurrency-not-integer",
        "unknown-tool",
        "unknown-agent",
        "tool-not-allowed",
        "nothing-to-run",
        "unparseable-over",
        "unparseable-argument",
        "unknown-map-field",
        "no-next-state",
        "map-is-the-last-step",
        "agent-beside-map",
    ],
)
def test_a_bad_map_step_is_refused_with_the_path_of_the_problem(
    demo_registry, platform_user, definition, path, message
):
    with pytest.raises(InvalidInput) as refused:
        publish("workflow", "research", definition, platform_user)

    problems = refused.value.errors["problems"]
    assert any(p["path"] == path and message in p["message"] for p in problems), problems
    assert not Artifact.objects.filter(kind="workflow", name="research").exists()
