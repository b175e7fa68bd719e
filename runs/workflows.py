"""Workflow specifications the engine can execute.

Built-in workflows are defined here in code; registry-published definitions will be
compiled into the same `WorkflowSpec` shape, so the engine has one thing to run.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

StepHandler = Callable[["StepContext"], dict[str, Any]]


@dataclass(frozen=True)
class StepContext:
    """What a step sees: the original input always, and every earlier step's output."""

    run_id: str
    case_id: str
    original_input: dict[str, Any]
    results: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class StepSpec:
    name: str
    handler: StepHandler
    next: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    version: str
    steps: tuple[StepSpec, ...]
    _by_name: dict[str, StepSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {step.name: step for step in self.steps})

    @property
    def first_step(self) -> StepSpec:
        return self.steps[0]

    def step(self, name: str) -> StepSpec:
        return self._by_name[name]


_INTENT_KEYWORDS = (
    ("refund", re.compile(r"\b(refund|money back|charge ?back)\b", re.IGNORECASE)),
    ("incident", re.compile(r"\b(error|bug|broken|outage|crash)\w*", re.IGNORECASE)),
)


def _classify(context: StepContext) -> dict[str, Any]:
    text = " ".join(str(value) for value in context.original_input.values() if isinstance(value, str))
    intent = next((name for name, pattern in _INTENT_KEYWORDS if pattern.search(text)), "question")
    return {"intent": intent, "characters": len(text)}


def _acknowledge(context: StepContext) -> dict[str, Any]:
    intent = context.results["classify"]["intent"]
    return {"message": f"Case {context.case_id}: your {intent} has been received.", "intent": intent}


BUILTIN_WORKFLOWS: dict[str, WorkflowSpec] = {
    spec.name: spec
    for spec in (
        WorkflowSpec(
            name="builtin.intake",
            version="1",
            steps=(
                StepSpec("classify", _classify, next=("acknowledge",)),
                StepSpec("acknowledge", _acknowledge),
            ),
        ),
    )
}


def workflow_spec(name: str) -> WorkflowSpec | None:
    return BUILTIN_WORKFLOWS.get(name)
