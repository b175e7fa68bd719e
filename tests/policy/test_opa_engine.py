"""The OPA server adapter against a loopback server that speaks OPA's REST API."""

import pytest

from policy.bundles import PolicyBundle, shipped_default_bundle
from policy.engines.embedded import EmbeddedEngine
from policy.engines.opa import OpaServerEngine, data_writes, rewrite_module
from policy.services import decision_input, policy_evaluate
from tests.support.opa_server import FakeOpa

from .test_engine import RUN

AGENT = {
    "slug": "case_manager",
    "status": "active",
    "data_classification": "confidential",
    "allowed_tools": {"crm.update_case": "irreversible", "kb": "read"},
}
SUBJECT = {"username": "platform", "roles": ["platform"], "kind": "user"}
DOCUMENTS = [
    (
        "tool.call",
        decision_input("tool.call", run=RUN, agent=AGENT, tool={"name": "kb", "side_effect": "read"}),
    ),
    (
        "tool.call",
        decision_input(
            "tool.call",
            run=RUN,
            agent=AGENT,
            tool={"name": "crm.update_case", "side_effect": "irreversible"},
            facts={"amount": 7000, "confidence": 0.5},
        ),
    ),
    (
        "tool.call",
        decision_input(
            "tool.call",
            run={**RUN, "hop_count": 10},
            agent=AGENT,
            tool={"name": "wipe", "side_effect": "write"},
        ),
    ),
    (
        "step.transition",
        decision_input(
            "step.transition",
            run=RUN,
            **{"from": "triage"},
            to="refund_now",
            allowed_next=["retrieve", "human"],
        ),
    ),
    (
        "step.transition",
        decision_input(
            "step.transition",
            run=RUN,
            **{"from": "triage"},
            to="retrieve",
            allowed_next=["retrieve", "human"],
        ),
    ),
    (
        "approval.decide",
        decision_input(
            "approval.decide",
            reviewer={"username": "ann", "groups": ["reviewer"]},
            request={"requested_by": "ann", "agent": "case_manager", "approver_group": "reviewer"},
            decision="approve",
        ),
    ),
    (
        "agent.lifecycle",
        decision_input(
            "agent.lifecycle",
            agent={"slug": "a", "status": "draft", "has_owner": True, "has_runbook": True, "has_slos": True},
            to="active",
            actor=SUBJECT,
        ),
    ),
    (
        "release.promote",
        decision_input(
            "release.promote",
            release={"id": "rel_1", "workflow": "w", "author": "platform", "evaluations": [], "signoffs": []},
            channel={"name": "production", "gated": True},
            actor=SUBJECT,
        ),
    ),
    (
        "run.start",
        decision_input(
            "run.start",
            subject=SUBJECT,
            workflow={"name": "w", "release_id": "rel_1", "agents": [AGENT]},
            task={"case_id": "C-1", "sensitivity": "internal"},
        ),
    ),
]


@pytest.fixture
def opa():
    server = FakeOpa().start()
    yield server
    server.stop()


def test_the_same_bundle_gives_the_same_answers_on_both_engines(opa, settings):
    # The loopback server compiles a path on its first query (OPA does it on upload), which on a
    # busy machine can outlast the decision timeout; this test is about answers, not time.
    settings.POLICY_TIMEOUT_MS = 10_000
    bundle = shipped_default_bundle()
    embedded, remote = EmbeddedEngine(), OpaServerEngine(opa.url, timeout_s=5)
    for point, document in DOCUMENTS:
        local = policy_evaluate(point, document, bundle=bundle, engine=embedded)
        served = policy_evaluate(point, document, bundle=bundle, engine=remote)
        assert local.failure == served.failure == "", (point, local.reasons, served.reasons)
        assert local.as_dict() == served.as_dict(), point
    assert {
        local.allow for local in (policy_evaluate(p, d, bundle=bundle, engine=embedded) for p, d in DOCUMENTS)
    } == {True, False}


def test_a_bundle_is_pushed_once_per_digest_under_its_own_namespace(opa):
    bundle = shipped_default_bundle()
    engine = OpaServerEngine(opa.url, timeout_s=5)
    for _ in range(3):
        policy_evaluate(*DOCUMENTS[0], bundle=bundle, engine=engine)
    puts = [path for method, path in opa.requests if method == "PUT"]
    assert len([p for p in puts if p.startswith("/v1/policies/")]) == len(bundle.modules)
    assert all(
        path.startswith(f"/v1/policies/{bundle.digest}/") or path.startswith("/v1/data/bundles/b")
        for path in puts
    )
    assert len([m for m, _ in opa.requests if m == "POST"]) == 3


def test_a_bundle_calling_out_of_the_decision_is_never_pushed_and_denies(opa):
    bundle = shipped_default_bundle()
    calling_out = PolicyBundle.from_content(
        "calling-out",
        {
            "modules": {
                **bundle.modules,
                "probe.rego": 'package probe\n\nx := http.send({"url": "http://10.0.0.1/"})\n',
            },
            "data": bundle.data,
        },
    )
    decision = policy_evaluate(
        *DOCUMENTS[0], bundle=calling_out, engine=OpaServerEngine(opa.url, timeout_s=5)
    )
    assert (decision.allow, decision.failure) == (False, "policy_unavailable")
    assert opa.requests == []


@pytest.mark.parametrize("failure", ["fail", "slow", "down"])
def test_an_unavailable_server_denies(opa, failure, settings):
    bundle = shipped_default_bundle()
    url = opa.url
    if failure == "fail":
        opa.fail = True
    elif failure == "slow":
        opa.delay_s = 1.0
    else:
        opa.stop()
    decision = policy_evaluate(*DOCUMENTS[1], bundle=bundle, engine=OpaServerEngine(url, timeout_s=0.2))
    assert (decision.allow, decision.failure) == (False, "policy_unavailable")
    if failure != "down":
        opa.fail, opa.delay_s = False, 0.0


def test_rewrite_prefixes_packages_and_data_but_not_strings_or_comments():
    source = 'package baton.x\n\nimport data.baton.lib\n\n# data.y stays\nr := "data.z" if data.baton.t > 1\n'
    assert rewrite_module(source, "bundles.b1") == (
        "package bundles.b1.baton.x\n\nimport data.bundles.b1.baton.lib\n\n# data.y stays\n"
        'r := "data.z" if data.bundles.b1.baton.t > 1\n'
    )


def test_data_is_written_beside_packages_never_over_them():
    writes = data_writes(
        {"baton": {"approval": {"amount": 1}, "release": {"n": 2}}, "other": {"k": 1}},
        "bundles.b1",
        {"bundles.b1.baton.tool_call", "bundles.b1.baton.lib"},
    )
    assert sorted(writes) == [
        ("bundles.b1.baton.approval", {"amount": 1}),
        ("bundles.b1.baton.release", {"n": 2}),
        ("bundles.b1.other", {"k": 1}),
    ]


def test_a_module_named_with_dot_segments_cannot_replace_another_bundles_module(opa, settings):
    settings.POLICY_TIMEOUT_MS = 10_000
    engine = OpaServerEngine(opa.url, timeout_s=5)
    served = shipped_default_bundle()
    before = policy_evaluate(*DOCUMENTS[0], bundle=served, engine=engine)
    # A name the registry accepts (and a dry run's inline bundle too), aimed at the served bundle.
    aimed = f"../{served.digest}/tool_call.rego"
    candidate = PolicyBundle.from_content(
        "candidate", {"modules": {aimed: "package probe\n\nx := 1\n"}, "data": {}}
    )
    engine.prepare(candidate)

    pushed = [path for method, path in opa.requests if method == "PUT" and candidate.digest in path]
    assert pushed == [f"/v1/policies/{candidate.digest}/..%2F{served.digest}%2Ftool_call.rego"]
    assert policy_evaluate(*DOCUMENTS[0], bundle=served, engine=engine).as_dict() == before.as_dict()
