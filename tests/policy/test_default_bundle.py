"""Baton's default policy bundle: its Rego unit tests pass, and its compiled entrypoints answer
realistic, schema-valid input documents with well-formed decisions.

No database: the bundle is read from its folder and evaluated by regopy in process.
"""

import json
from pathlib import Path

import pytest
from regopy import Input, Interpreter

from policy.decision_points import INPUT_VERSION, POINTS, RESULT_VALIDATOR
from policy.testing import run_bundle_tests

BUNDLE_DIR = Path(__file__).resolve().parents[2] / "policy" / "bundles" / "default"
ENTRYPOINTS = [point.entrypoint for point in POINTS.values()]
NOW = 1767225600.0  # 2026-01-01T00:00:00Z, as the database would stamp it
HOUR = 3600.0


def modules() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(BUNDLE_DIR.glob("*.rego"))}


def data() -> dict:
    return json.loads((BUNDLE_DIR / "data.json").read_text())


def package(point: str) -> str:
    """The Rego package of a decision point: `baton/tool_call/decision` -> `baton.tool_call`."""
    return ".".join(POINTS[point].entrypoint.split("/")[:-1])


# --- (a) The bundle's own Rego unit tests ---------------------------------------------------


@pytest.fixture(scope="module")
def rego_results():
    return run_bundle_tests(modules(), data())


def test_every_rego_unit_test_passes(rego_results):
    failures = [f"{result.name}: {result.detail}" for result in rego_results if not result.passed]
    assert failures == []


def test_there_are_enough_rego_tests_for_every_package(rego_results):
    assert len(rego_results) >= 40
    tested = {result.name.rsplit(".", 1)[0] for result in rego_results}
    expected = {f"{package(point)}_test" for point in POINTS} | {"baton.lib_test"}
    assert expected <= tested
    per_package = {name: sum(r.name.startswith(f"{name}.") for r in rego_results) for name in expected}
    assert min(per_package.values()) >= 5, per_package


def test_no_data_section_shares_a_package_path():
    """An OPA server takes data only where it does not cover a policy package."""
    packages = {
        line.split()[1]
        for source in modules().values()
        for line in source.splitlines()
        if line.startswith("package ")
    }
    sections = {f"baton.{section}" for section in data()["baton"]}
    assert sections.isdisjoint(packages)


def test_data_settings_are_documented():
    readme = (BUNDLE_DIR / "README.md").read_text()
    settings = data()["baton"]
    keys = [f"{section}.{key}" for section, values in settings.items() for key in values]
    assert keys
    assert [key for key in keys if f"data.baton.{key}" not in readme] == []


# --- (b) and (c) The compiled bundle, as the embedded engine evaluates it ---------------------


@pytest.fixture(scope="module")
def compiled():
    interpreter = Interpreter()
    for name, source in modules().items():
        interpreter.add_module(name, source)
    interpreter.add_data(data())
    bundle = interpreter.build(None, ENTRYPOINTS)
    assert bundle.ok()
    return interpreter, bundle


def evaluate(compiled, point: str, document: dict) -> dict:
    """The decision at `point`; the engine's output must be JSON with one expression."""
    interpreter, bundle = compiled
    interpreter.set_input(Input(document))
    raw = str(interpreter.query_bundle_entrypoint(bundle, POINTS[point].entrypoint))
    output = json.loads(raw)
    assert list(output) == ["expressions"], raw
    (decision,) = output["expressions"]
    return decision


def document(point: str, **fields) -> dict:
    doc = {"decision_point": point, "version": INPUT_VERSION, **fields}
    errors = [error.message for error in POINTS[point].validator.iter_errors(doc)]
    assert errors == [], errors
    return doc


def run(**changes) -> dict:
    """A run of support_case_resolution, well within its limits unless changed."""
    return {
        "id": "run_01",
        "workflow": "support_case_resolution",
        "release_id": "rel_0123456789abcdef",
        "hop_count": 3,
        "max_hops": 10,
        "budget": {"tokens": 20000, "tool_calls": 20, "cost_usd": 1.0},
        "spent": {"tokens": 1800, "tool_calls": 2, "cost_usd": 0.12},
        "now": NOW,
        "deadline": NOW + HOUR,
        "sensitivity": "confidential",
        **changes,
    }


CASE_MANAGER = {
    "slug": "case_manager",
    "status": "active",
    "data_classification": "confidential",
    "allowed_tools": {"kb_search": "read", "crm.update_case": "write", "crm.refund": "irreversible"},
    "identity": "agent.case_manager",
}
INTAKE_CLASSIFIER = {
    "slug": "intake_classifier",
    "status": "active",
    "data_classification": "confidential",
    "allowed_tools": {"kb_search": "read"},
    "identity": "agent.intake_classifier",
}
PLATFORM_USER = {"username": "pat", "roles": ["platform"], "kind": "user"}
REQUEST = {
    "requested_by": "ada",
    "agent": "case_manager",
    "approver_group": "reviewer",
    "sensitivity": "confidential",
}
RELEASE = {
    "id": "rel_0123456789abcdef",
    "workflow": "support_case_resolution",
    "author": "ada",
    "evaluations": [{"suite": "golden_cases", "score": 0.94}, {"suite": "safety", "score": 0.97}],
    "signoffs": ["bob", "carol"],
    "retired_agents": [],
}
READY_AGENT = {
    "slug": "response_writer",
    "status": "draft",
    "has_owner": True,
    "has_runbook": True,
    "has_slos": True,
}

ALLOWED = {"allow": True, "require_approval": False, "reasons": []}


def denied(*reasons: str) -> dict:
    return {"allow": False, "require_approval": False, "reasons": list(reasons)}


CASES = {
    # run.start
    "run.start/active-agents": (
        "run.start",
        {
            "subject": {"username": "ada", "roles": ["reviewer"], "kind": "user"},
            "workflow": {
                "name": "support_case_resolution",
                "release_id": "rel_0123456789abcdef",
                "channel": "production",
                "agents": [INTAKE_CLASSIFIER, CASE_MANAGER],
            },
            "task": {
                "case_id": "case_42",
                "sensitivity": "confidential",
                "budget": {"tokens": 20000, "cost_usd": 1.0},
                "deadline": NOW + HOUR,
                "input": {"text": "Where is my refund for order 1234?"},
            },
        },
        ALLOWED,
    ),
    "run.start/retired-agent-restricted-data": (
        "run.start",
        {
            "subject": {"username": "ada", "roles": ["reviewer"]},
            "workflow": {
                "name": "support_case_resolution",
                "release_id": "rel_0123456789abcdef",
                "agents": [INTAKE_CLASSIFIER, {**CASE_MANAGER, "status": "retired"}],
            },
            "task": {"case_id": "case_43", "sensitivity": "restricted"},
        },
        denied(
            "the task's data is restricted, and runs on restricted data are not allowed",
            "workflow agents are not active: case_manager (retired)",
        ),
    ),
    "run.start/blank-subject-negative-budget": (
        "run.start",
        {
            "subject": {"username": "", "roles": [], "kind": "system"},
            "workflow": {"name": "support_case_resolution", "release_id": "rel_0123456789abcdef"},
            "task": {"case_id": "case_44", "budget": {"tokens": -1}},
        },
        denied("a run must be started by a named subject", "budget must not be negative: tokens -1"),
    ),
    # step.transition
    "step.transition/declared": (
        "step.transition",
        {
            "run": run(),
            "from": "triage",
            "to": "retrieve",
            "allowed_next": ["retrieve", "human"],
            "proposed_by": "intake_classifier",
        },
        ALLOWED,
    ),
    "step.transition/invented-branch": (
        "step.transition",
        {
            "run": run(),
            "from": "triage",
            "to": "refund_now",
            "allowed_next": ["retrieve", "human"],
            "proposed_by": "intake_classifier",
        },
        denied("transition triage -> refund_now is not in the workflow"),
    ),
    "step.transition/exhausted-run": (
        "step.transition",
        {
            "run": run(hop_count=10, spent={"tokens": 1800, "tool_calls": 2, "cost_usd": 1.2}),
            "from": "retrieve",
            "to": "approve",
            "allowed_next": ["approve"],
        },
        denied("budget exceeded: cost_usd 1.2 > 1", "hop limit 10 reached"),
    ),
    # tool.call
    "tool.call/read-within-scope": (
        "tool.call",
        {
            "run": run(),
            "agent": INTAKE_CLASSIFIER,
            "tool": {"name": "kb_search", "side_effect": "read", "external": False},
            "args": {"query": "refund policy"},
            "facts": {"confidence": 0.93},
        },
        ALLOWED,
    ),
    "tool.call/high-value-refund": (
        "tool.call",
        {
            "run": run(),
            "agent": CASE_MANAGER,
            "tool": {"name": "crm.refund", "side_effect": "irreversible", "external": False},
            "args": {"case_id": "case_42", "amount": 7500},
            "facts": {"amount": 7500, "confidence": 0.7},
        },
        {
            "allow": True,
            "require_approval": True,
            "reasons": [
                "amount 7500 is over the approval threshold 500",
                "confidence 0.7 is below 0.85",
                "crm.refund is irreversible",
            ],
            "approvers": ["platform", "reviewer"],
            "quorum": 2,
        },
    ),
    "tool.call/tool-not-allowed-past-deadline": (
        "tool.call",
        {
            "run": run(now=NOW + 2 * HOUR),
            "agent": INTAKE_CLASSIFIER,
            "tool": {"name": "crm.update_case", "side_effect": "write"},
            "args": {"case_id": "case_42", "resolution": "refunded"},
        },
        denied("agent intake_classifier may not call crm.update_case", "deadline passed"),
    ),
    # approval.decide
    "approval.decide/reviewer-approves": (
        "approval.decide",
        {
            "reviewer": {"username": "rita", "groups": ["reviewer"], "clearance": "confidential"},
            "request": REQUEST,
            "decision": "approve",
        },
        ALLOWED,
    ),
    "approval.decide/requester-approves-own": (
        "approval.decide",
        {
            "reviewer": {"username": "ada", "groups": ["reviewer"], "clearance": "confidential"},
            "request": REQUEST,
            "decision": "approve",
        },
        denied("requester cannot approve their own request"),
    ),
    "approval.decide/agent-rejects-own": (
        "approval.decide",
        {
            "reviewer": {"username": "agent.case_manager", "groups": []},
            "request": REQUEST,
            "decision": "reject",
        },
        denied(
            "reviewer agent.case_manager is cleared for internal data, and the request holds "
            "confidential data",
            "reviewer agent.case_manager is not in the approver group reviewer",
            "the agent cannot reject its own action",
        ),
    ),
    # release.promote
    "release.promote/production": (
        "release.promote",
        {
            "release": RELEASE,
            "channel": {"name": "production", "gated": True, "mode": "full"},
            "actor": PLATFORM_USER,
        },
        ALLOWED,
    ),
    "release.promote/production-gates-fail": (
        "release.promote",
        {
            "release": {
                **RELEASE,
                "evaluations": [{"suite": "golden_cases", "score": 0.82}],
                "signoffs": ["ada", "bob"],
            },
            "channel": {"name": "production", "gated": True},
            "actor": PLATFORM_USER,
        },
        denied("1 of 2 sign-offs by people other than the author", "evaluations below 0.9: golden_cases"),
    ),
    "release.promote/staging-retired-agent": (
        "release.promote",
        {
            "release": {**RELEASE, "evaluations": [], "signoffs": [], "retired_agents": ["legacy_writer"]},
            "channel": {"name": "staging", "gated": False},
            "actor": {"username": "rita", "roles": ["reviewer"]},
        },
        denied(
            "actor rita needs role platform or admin to promote a release",
            "uses retired agents: legacy_writer",
        ),
    ),
    # agent.lifecycle
    "agent.lifecycle/activate-ready-agent": (
        "agent.lifecycle",
        {"agent": READY_AGENT, "to": "active", "actor": PLATFORM_USER},
        ALLOWED,
    ),
    "agent.lifecycle/retire-without-reason": (
        "agent.lifecycle",
        {
            "agent": {**READY_AGENT, "status": "active"},
            "to": "retired",
            "reason": " ",
            "actor": {"username": "rita", "roles": ["reviewer"]},
        },
        denied(
            "actor rita needs role platform or admin to change an agent's lifecycle",
            "retiring agent response_writer needs a reason",
        ),
    ),
    "agent.lifecycle/revive-retired-agent": (
        "agent.lifecycle",
        {
            "agent": {"slug": "legacy_writer", "status": "retired", "has_owner": True},
            "to": "active",
            "actor": PLATFORM_USER,
        },
        denied(
            "agent legacy_writer cannot become active: no runbook, no SLOs",
            "agent legacy_writer is retired and cannot become active",
        ),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_bundle_decides_realistic_inputs(compiled, case):
    point, fields, expected = CASES[case]
    decision = evaluate(compiled, point, document(point, **fields))
    assert decision == expected
    assert list(RESULT_VALIDATOR.iter_errors(decision)) == []


def test_every_point_has_an_allowed_and_a_denied_case():
    outcomes = {(point, expected["allow"]) for point, _, expected in CASES.values()}
    assert outcomes == {(point, allow) for point in POINTS for allow in (True, False)}


# Inputs are validated against their schema before the engine sees them, so the bundle does
# not diagnose incomplete documents; it still denies them, with a reason, in a well-formed
# decision (default deny: the positive rules require every fact they rely on).


@pytest.mark.parametrize("point", list(POINTS))
def test_empty_input_is_denied_with_a_well_formed_decision(compiled, point):
    decision = evaluate(compiled, point, {})
    assert decision["allow"] is False
    assert decision["require_approval"] is False
    assert decision["reasons"]
    assert list(RESULT_VALIDATOR.iter_errors(decision)) == []


@pytest.mark.parametrize("point", list(POINTS))
def test_envelope_only_input_is_denied(compiled, point):
    decision = evaluate(compiled, point, {"decision_point": point, "version": INPUT_VERSION})
    assert decision["allow"] is False
    assert decision["reasons"]
    assert list(RESULT_VALIDATOR.iter_errors(decision)) == []


@pytest.mark.parametrize("case", list(CASES))
def test_a_missing_fact_denies(compiled, case):
    """Every realistic input, with any one of its top-level facts removed, is denied."""
    point, fields, _ = CASES[case]
    for key in fields:
        doc = {"decision_point": point, "version": INPUT_VERSION, **fields}
        del doc[key]
        if key in POINTS[point].input_schema["required"]:
            decision = evaluate(compiled, point, doc)
            assert decision["allow"] is False, (key, decision)
            assert decision["reasons"], key


def test_approvers_and_quorum_come_only_with_an_approval(compiled):
    for point, fields, _ in CASES.values():
        decision = evaluate(compiled, point, document(point, **fields))
        assert ("approvers" in decision) == decision["require_approval"]
        assert ("quorum" in decision) == decision["require_approval"]
        assert decision["reasons"] == sorted(decision["reasons"])
