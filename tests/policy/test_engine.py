"""Fail-closed evaluation, the compiled-bundle cache and the decision log."""

import pytest

from controlplane.canonical import digest
from policy.bundles import PolicyBundle, shipped_default_bundle
from policy.engines import UNDEFINED
from policy.engines.embedded import EmbeddedEngine, reachable_modules
from policy.models import PolicyDecision
from policy.services import REDACTED, decision_input, policy_decide, policy_evaluate

from .bundles import ALLOW, bundle

RUN = {
    "id": "r1",
    "workflow": "w",
    "hop_count": 1,
    "max_hops": 10,
    "budget": {},
    "spent": {},
    "now": 1.0,
    "deadline": None,
}
TOOL_CALL = decision_input(
    "tool.call",
    run=RUN,
    agent={"slug": "a", "status": "active", "allowed_tools": {"kb": "read"}},
    tool={"name": "kb", "side_effect": "read"},
    args={"secret": "s3cr3t"},
)


def test_a_well_formed_answer_is_returned():
    decision = policy_evaluate("tool.call", TOOL_CALL, bundle=bundle())
    assert (decision.allow, decision.require_approval, decision.failure, decision.engine) == (
        True,
        False,
        "",
        "embedded",
    )


@pytest.mark.parametrize(
    ("rule", "failure"),
    [
        ('decision := {"allow": true, "reasons": []} if input.never', "policy_undefined"),
        ('decision := "yes"', "policy_undefined"),
        ('decision := {"allow": "true", "require_approval": false, "reasons": []}', "policy_undefined"),
        ('decision := {"allow": true, "reasons": []}', "policy_undefined"),
        ("decision := 1 / 0", "policy_undefined"),
    ],
    ids=["undefined", "not-an-object", "allow-not-boolean", "missing-field", "division-by-zero"],
)
def test_undefined_or_malformed_answers_deny(rule, failure):
    decision = policy_evaluate("tool.call", TOOL_CALL, bundle=bundle(rule))
    assert not decision.allow
    assert decision.failure == failure
    assert decision.reasons[0].startswith(failure)


def test_an_engine_error_denies_as_unavailable():
    broken = bundle("decision := {")
    decision = policy_evaluate("tool.call", TOOL_CALL, bundle=broken)
    assert (decision.allow, decision.failure) == (False, "policy_unavailable")
    assert "does not compile" in decision.reasons[0]


def test_an_evaluation_past_the_timeout_denies(settings):
    settings.POLICY_TIMEOUT_MS = 1
    slow = bundle(f"decision := {ALLOW} if {{ count([x | some x in numbers.range(1, 300000)]) > 0 }}")
    decision = policy_evaluate("tool.call", TOOL_CALL, bundle=slow)
    assert (decision.allow, decision.failure) == (False, "policy_unavailable")
    assert "timed out" in decision.reasons[0]


def test_the_engine_sees_the_input_document_as_given():
    echo = bundle(
        'decision := {"allow": true, "require_approval": false, "reasons": [], '
        '"obligations": {"seen": input}}'
    )
    document = {
        **TOOL_CALL,
        "args": {"note": "Grüße, 請求書 ✓", "lines": [1, -2.5, True, None, [], {}], "big": 2**62},
    }
    assert (
        EmbeddedEngine().evaluate(echo, "baton/tool_call/decision", document)["obligations"]["seen"]
        == document
    )


def test_object_members_are_iterated_in_key_order_whatever_the_dict_order():
    collect = bundle(
        'decision := {"allow": true, "require_approval": false, "reasons": reasons} if {\n'
        "\treasons := [key | some key; input.args[key]]\n}"
    )
    document = {**TOOL_CALL, "args": {"b": 1, "c": 2, "a": 3}}
    result = EmbeddedEngine().evaluate(collect, "baton/tool_call/decision", document)
    assert result["reasons"] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "args",
    [{"note": "refund\x00approved"}, {"tokens": 2**64 + 5}, {"amount": float("nan")}, {"when": object()}],
    ids=["nul-in-string", "int-over-64-bits", "nan", "not-json"],
)
def test_an_input_the_engine_cannot_take_faithfully_denies(args):
    decision = policy_evaluate("tool.call", {**TOOL_CALL, "args": args}, bundle=bundle())
    assert (decision.allow, decision.failure) == (False, "policy_unavailable")


def test_an_input_that_does_not_fit_the_point_denies():
    decision = policy_evaluate("tool.call", {"decision_point": "tool.call", "version": 1}, bundle=bundle())
    assert (decision.allow, decision.failure) == (False, "policy_input_invalid")


def test_compiled_bundles_are_cached_by_digest():
    engine = EmbeddedEngine()
    first, changed = bundle(), bundle(data={"threshold": 2})
    assert first.digest != changed.digest
    engine.evaluate(first, "baton/tool_call/decision", TOOL_CALL)
    engine.evaluate(first, "baton/tool_call/decision", TOOL_CALL)
    assert engine.compiled_count() == 1
    engine.evaluate(changed, "baton/tool_call/decision", TOOL_CALL)
    assert engine.compiled_count() == 2
    assert engine.compile(first) is engine.compile(first)


def test_each_entrypoint_is_built_with_only_the_modules_it_reaches():
    modules = {
        name: source for name, source in shipped_default_bundle().modules.items() if "_test" not in name
    }
    assert list(reachable_modules(modules, "baton/tool_call/decision")) == ["lib.rego", "tool_call.rego"]
    chained = {
        "a.rego": 'package a\nimport data.b\n# data.d\nx := concat("", ["data.d", b.q.y])',
        "b.rego": "package b.q\ny := data.c.z",
        "c.rego": 'package c\nz := "c"',
        "d.rego": 'package d\nz := "d"',
    }
    assert list(reachable_modules(chained, "a/x")) == ["a.rego", "b.rego", "c.rego"]
    unnamed = {"a.rego": "package a\nx := data[y]", "b.rego": "package b\ny := 1"}
    assert list(reachable_modules(unnamed, "a/x")) == ["a.rego", "b.rego"]


def test_a_deny_rule_in_another_package_still_decides():
    allowing = bundle(f"import data.extra\n\ndecision := {ALLOW} if not extra.blocked")
    blocking = PolicyBundle.from_content(
        "test",
        {"modules": {**allowing.modules, "extra.rego": "package extra\n\nblocked := true\n"}, "data": {}},
    )
    engine = EmbeddedEngine()
    assert engine.evaluate(allowing, "baton/tool_call/decision", TOOL_CALL)["allow"] is True
    assert engine.evaluate(blocking, "baton/tool_call/decision", TOOL_CALL) is UNDEFINED


def test_a_module_that_no_entrypoint_reaches_must_compile_too():
    allowing = bundle()
    broken = PolicyBundle.from_content(
        "test", {"modules": {**allowing.modules, "unused.rego": "package unused\n\nx := {\n"}, "data": {}}
    )
    decision = policy_evaluate("tool.call", TOOL_CALL, bundle=broken)
    assert (decision.allow, decision.failure) == (False, "policy_unavailable")
    assert "does not compile" in decision.reasons[0]


def test_a_changed_rule_under_a_new_digest_gives_the_new_answer():
    engine = EmbeddedEngine()
    allow = bundle()
    deny = bundle('decision := {"allow": false, "require_approval": false, "reasons": ["no"]}')
    assert engine.evaluate(allow, "baton/tool_call/decision", TOOL_CALL)["allow"] is True
    assert engine.evaluate(deny, "baton/tool_call/decision", TOOL_CALL)["allow"] is False


def test_undefined_is_reported_by_the_engine():
    engine = EmbeddedEngine()
    never = bundle('decision := {"allow": true} if input.never')
    assert engine.evaluate(never, "baton/tool_call/decision", TOOL_CALL) is UNDEFINED


@pytest.mark.django_db
def test_every_decision_is_logged_once_with_redacted_input():
    decided = [
        policy_decide(
            "tool.call", TOOL_CALL, bundle=bundle(), actor="agent:a", trace_id="t" * 32, run_id="r1"
        )
        for _ in range(3)
    ]
    policy_decide("tool.call", TOOL_CALL, bundle=bundle("decision := {"), run_id="r1")

    rows = list(PolicyDecision.objects.order_by("pk"))
    assert [row.pk for row in rows[:3]] == [d.decision_id for d in decided]
    assert len(rows) == 4
    assert [row.allow for row in rows] == [True, True, True, False]
    assert rows[3].failure == "policy_unavailable"
    logged = rows[0]
    assert logged.input["args"] == REDACTED and "s3cr3t" not in str(logged.input)
    assert logged.input_digest == digest(TOOL_CALL)
    assert (logged.bundle_digest, logged.engine, logged.run_id, logged.actor) == (
        bundle().digest,
        "embedded",
        "r1",
        "agent:a",
    )
    assert logged.latency_us > 0


def test_the_embedded_engine_is_safe_for_concurrent_threads():
    from concurrent.futures import ThreadPoolExecutor

    engine = EmbeddedEngine()
    allow = bundle()
    deny = bundle('decision := {"allow": false, "require_approval": false, "reasons": ["no"]}')

    def decide(n: int) -> tuple[int, bool]:
        chosen = allow if n % 2 else deny
        return n, engine.evaluate(chosen, "baton/tool_call/decision", TOOL_CALL)["allow"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(decide, range(200)))
    assert all(allowed == bool(n % 2) for n, allowed in answers)
