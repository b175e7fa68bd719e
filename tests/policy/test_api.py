import copy
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.identity import actor_for
from policy.bundles import PolicyBundle, shipped_default_bundle
from policy.impact import impact_analysis
from policy.models import PolicyDecision
from policy.services import decision_input, policy_decide
from registry.services.artifacts import artifact_publish

from .bundles import bundle
from .test_default_bundle import CASES
from .test_engine import RUN

pytestmark = pytest.mark.django_db
READ = ["policy:read"]


def tool_call(amount: float, side_effect: str = "write") -> dict:
    return decision_input(
        "tool.call",
        run=RUN,
        agent={"slug": "a", "status": "active", "allowed_tools": {"crm": "irreversible"}},
        tool={"name": "crm", "side_effect": side_effect},
        facts={"amount": amount, "confidence": 0.99},
    )


def with_threshold(amount: int) -> PolicyBundle:
    content = copy.deepcopy(shipped_default_bundle().content)
    content["data"]["baton"]["approval"]["amount_threshold"] = amount
    return PolicyBundle.from_content("candidate", content)


def post(client, path, body):
    return client.post(path, json.dumps(body), content_type="application/json")


def test_default_bundle_asks_approval_over_the_amount_threshold():
    default = shipped_default_bundle()
    assert not policy_decide("tool.call", tool_call(100), bundle=default).require_approval
    over = policy_decide("tool.call", tool_call(600), bundle=default)
    assert over.allow and over.require_approval
    assert over.approvers


def test_impact_analysis_lists_exactly_the_decisions_a_changed_rule_flips():
    default = shipped_default_bundle()
    for amount in (100, 600, 700, 2000):
        policy_decide("tool.call", tool_call(amount), bundle=default)

    report = impact_analysis(with_threshold(1000))

    assert report.evaluated == 4
    assert sorted(c.decision.input["facts"]["amount"] for c in report.changes) == [600, 700]
    assert report.summary == {"approval removed": 2}
    assert impact_analysis(default).changes == []


def test_impact_analysis_leaves_out_what_the_log_redacted_instead_of_reporting_a_change():
    default = shipped_default_bundle()
    with_arguments = decision_input(
        "tool.call",
        run=RUN,
        agent={"slug": "a", "status": "active", "allowed_tools": {"crm": "irreversible"}},
        tool={"name": "crm", "side_effect": "write"},
        args={"case_id": "CASE-1", "refund_amount": 600, "note": "card 4242 4242 4242 4242"},
        facts={"amount": 600, "confidence": 0.99},
    )
    started = decision_input("run.start", **CASES["run.start/active-agents"][1])
    policy_decide("tool.call", with_arguments, bundle=default)
    policy_decide("run.start", started, bundle=default)
    assert PolicyDecision.objects.filter(input__args="[redacted]").exists()  # the log keeps no arguments

    report = impact_analysis(default)

    assert report.evaluated == 2 and report.changes == []
    assert [c.decision.decision_point for c in impact_analysis(with_threshold(1000)).changes] == ["tool.call"]


@pytest.mark.parametrize(
    ("persona", "status"),
    [("platform_user", 200), ("auditor", 200), ("admin_user", 200), ("reviewer", 403), ("requester", 403)],
)
def test_permission_matrix(request, client_for, persona, status):
    policy_decide("tool.call", tool_call(10), bundle=bundle())
    client = client_for(request.getfixturevalue(persona), scopes=READ)
    decision = PolicyDecision.objects.get()
    assert client.get("/api/v1/policy/decisions").status_code == status
    assert client.get(f"/api/v1/policy/decisions/{decision.pk}").status_code == status
    evaluated = post(
        client, "/api/v1/policy/evaluate", {"decision_point": "tool.call", "input": tool_call(10)}
    )
    assert evaluated.status_code == status
    # No bundle named "default" is published in this test: allowed callers get a 422.
    assert post(client, "/api/v1/policy/impact", {"bundle": "default"}).status_code == (
        403 if status == 403 else 422
    )
    assert PolicyDecision.objects.count() == 1  # dry runs record nothing


def test_anonymous_and_unscoped_keys_are_refused(api_client, client_for, auditor):
    assert api_client.get("/api/v1/policy/decisions").status_code == 401
    assert client_for(auditor, scopes=["runs:read"]).get("/api/v1/policy/decisions").status_code == 403


def test_decision_log_filters_and_query_count(client_for, auditor):
    client = client_for(auditor, scopes=READ)
    policy_decide("tool.call", tool_call(10), bundle=bundle(), run_id="r-1")
    client.get("/api/v1/policy/decisions")
    with CaptureQueriesContext(connection) as few:
        client.get("/api/v1/policy/decisions")
    for _ in range(20):
        policy_decide("tool.call", tool_call(10), bundle=bundle("decision := {"), run_id="r-2")
    with CaptureQueriesContext(connection) as many:
        body = client.get("/api/v1/policy/decisions?failure=policy_unavailable").json()
    assert len(many) == len(few)
    assert len(body["results"]) == 20 and {d["run_id"] for d in body["results"]} == {"r-2"}
    assert len(client.get("/api/v1/policy/decisions?run_id=r-1").json()["results"]) == 1


def test_boolean_and_point_filters_filter_or_are_refused(client_for, auditor):
    client = client_for(auditor, scopes=READ)
    policy_decide("tool.call", tool_call(100), bundle=shipped_default_bundle())
    policy_decide("tool.call", tool_call(600), bundle=shipped_default_bundle())

    def require_approval(query: str) -> list[bool]:
        answer = client.get(f"/api/v1/policy/decisions?{query}")
        assert answer.status_code == 200, answer.content
        return [decision["require_approval"] for decision in answer.json()["results"]]

    assert require_approval("require_approval=1") == require_approval("require_approval=true") == [True]
    assert require_approval("require_approval=0") == require_approval("require_approval=False") == [False]
    for query in ("allow=no", "require_approval=yes", "decision_point=tool_call"):
        refused = client.get(f"/api/v1/policy/decisions?{query}")
        assert refused.status_code == 422 and refused["Content-Type"] == "application/problem+json", query
        assert query.split("=")[0] in refused.json()["errors"]


def test_dry_run_with_an_inline_candidate_bundle(client_for, platform_user):
    client = client_for(platform_user, scopes=READ)
    candidate = with_threshold(50).content
    response = post(
        client,
        "/api/v1/policy/evaluate",
        {"decision_point": "tool.call", "input": tool_call(60), "bundle": candidate},
    )
    assert response.status_code == 200
    assert response.json()["require_approval"] is True
    broken = post(
        client,
        "/api/v1/policy/evaluate",
        {
            "decision_point": "tool.call",
            "input": tool_call(60),
            "bundle": {"modules": {"x.rego": "package x\nallow if {"}},
        },
    )
    assert broken.status_code == 422
    unknown_point = post(client, "/api/v1/policy/evaluate", {"decision_point": "nope", "input": {}})
    assert unknown_point.status_code == 422
    assert not PolicyDecision.objects.exists()


def test_a_candidate_bundle_that_calls_out_of_the_decision_is_refused(client_for, platform_user):
    # Evaluated on an OPA server, http.send would have that server send requests for the caller.
    candidate = with_threshold(50).content
    candidate["modules"]["probe.rego"] = (
        "package probe\n\nimport rego.v1\n\n"
        'reply := http.send({"method": "GET", "url": "http://10.0.0.1/"})\n'
        "env := opa.runtime().env\n"
    )
    response = post(
        client_for(platform_user, scopes=READ),
        "/api/v1/policy/evaluate",
        {"decision_point": "tool.call", "input": tool_call(60), "bundle": candidate},
    )
    assert response.status_code == 422
    assert "probe.rego: http.send, probe.rego: opa.runtime" in response.json()["detail"]


def test_a_bundle_version_of_other_digits_than_ascii_is_unknown(client_for, platform_user):
    client = client_for(platform_user, scopes=READ)
    artifact_publish(
        kind="policy_bundle",
        name="default",
        content=shipped_default_bundle().content,
        author=platform_user,
        actor=actor_for(platform_user),
    )
    for path, body in (
        ("/api/v1/policy/evaluate", {"decision_point": "run.start", "input": {}, "bundle": "default@²"}),
        ("/api/v1/policy/impact", {"bundle": "default@²"}),
    ):
        response = post(client, path, body)
        assert response.status_code == 422, path
        assert response.json()["detail"] == "No published policy bundle 'default@²'."


def test_impact_over_the_api(client_for, platform_user):
    for amount in (100, 600):
        policy_decide("tool.call", tool_call(amount), bundle=shipped_default_bundle())
    client = client_for(platform_user, scopes=READ)
    response = post(client, "/api/v1/policy/impact", {"bundle": with_threshold(1000).content, "limit": 10})
    body = response.json()
    assert response.status_code == 200
    assert body["evaluated"] == 2 and body["summary"] == {"approval removed": 1}
    assert body["changes"][0]["recorded"]["require_approval"] is True
