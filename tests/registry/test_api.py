import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from controlplane.identity import Actor
from registry.models import Agent, Artifact, Channel, Release
from registry.services import agents as agent_services
from registry.services.artifacts import artifact_publish
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
READ = ["registry:read"]
WRITE = ["registry:read", "registry:write"]
NEW_AGENT = {
    "slug": "summariser",
    "display_name": "Summariser",
    "purpose": "Summarise cases.",
    "data_classification": "internal",
    "allowed_tools": [{"tool": "kb_search", "scope": "read"}],
}


def post(client, path, body):
    return client.post(
        path, json.dumps(body) if not isinstance(body, str) else body, content_type="application/json"
    )


@pytest.fixture
def agent_client(demo_registry):
    agent = Agent.objects.get(slug="case_manager")
    issued = agent_services.agent_issue_key(
        agent=agent, actor=Actor("platform", roles=frozenset({"platform"}))
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    return client


@pytest.mark.parametrize(
    ("persona", "scopes", "read", "write"),
    [
        ("platform_user", WRITE, 200, 201),
        ("admin_user", WRITE, 200, 201),
        ("reviewer", WRITE, 200, 403),
        ("auditor", WRITE, 200, 403),
        ("requester", WRITE, 200, 403),
        ("platform_user", READ, 200, 403),
    ],
)
def test_permission_matrix(request, demo_registry, client_for, persona, scopes, read, write):
    client = client_for(request.getfixturevalue(persona), scopes=scopes)
    for path in (
        "/api/v1/agents",
        "/api/v1/releases",
        "/api/v1/artifacts/tool",
        "/api/v1/channels",
        "/api/v1/teams",
        f"/api/v1/releases/{Release.objects.get().pk}",
    ):
        assert client.get(path).status_code == read, path
    assert post(client, "/api/v1/agents", NEW_AGENT).status_code == write
    assert Agent.objects.filter(slug="summariser").exists() == (write == 201)


def test_agents_own_key_reads_but_cannot_change_the_registry(agent_client):
    assert agent_client.get("/api/v1/agents").status_code == 200
    assert post(agent_client, "/api/v1/agents", NEW_AGENT).status_code == 403
    assert post(agent_client, "/api/v1/artifacts/prompt", {"name": "p", "content": {}}).status_code == 403
    release = Release.objects.get()
    assert (
        post(agent_client, f"/api/v1/releases/{release.pk}/promote", {"channel": "staging"}).status_code
        == 403
    )


def test_anonymous_gets_401(api_client, demo_registry):
    assert api_client.get("/api/v1/agents").status_code == 401
    assert post(api_client, "/api/v1/agents", NEW_AGENT).status_code == 401


def test_agent_lifecycle_over_the_api(demo_registry, platform_user, client_for):
    client = client_for(platform_user, scopes=WRITE)
    created = post(client, "/api/v1/agents", {**NEW_AGENT, "owner_team": "customer-support-ai"})
    assert created.status_code == 201
    assert created.json()["service_identity"] == "agent.summariser"

    refused = post(client, "/api/v1/agents/summariser/lifecycle", {"status": "active"})
    assert refused.status_code == 422
    assert set(refused.json()["errors"]) == {"runbook_url", "slo_p95_latency_ms", "slo_success_rate"}

    patched = client.patch(
        "/api/v1/agents/summariser",
        json.dumps(
            {"runbook_url": "https://rb.example/s", "slo_p95_latency_ms": 800, "slo_success_rate": "0.99"}
        ),
        content_type="application/json",
    )
    assert patched.status_code == 200
    assert (
        post(client, "/api/v1/agents/summariser/lifecycle", {"status": "active"}).json()["status"] == "active"
    )
    assert post(client, "/api/v1/agents/summariser/lifecycle", {"status": "retired"}).status_code == 422
    retired = post(client, "/api/v1/agents/summariser/lifecycle", {"status": "retired", "reason": "merged"})
    assert retired.json()["retirement_reason"] == "merged"
    assert post(client, "/api/v1/agents/summariser/lifecycle", {"status": "active"}).status_code == 409

    key = post(client, "/api/v1/agents/case_manager/keys", {"scopes": ["runs:read"], "expires_days": 7})
    assert key.status_code == 201 and key.json()["key"].startswith("baton_")


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/api/v1/agents", {**NEW_AGENT, "colour": "blue"}, 422, "colour"),
        ("/api/v1/agents", {**NEW_AGENT, "slug": "Not A Slug"}, 422, "slug"),
        ("/api/v1/agents", {**NEW_AGENT, "slo_p95_latency_ms": 2**31}, 422, "slo_p95_latency_ms"),
        (
            "/api/v1/agents",
            {**NEW_AGENT, "allowed_tools": [{"tool": "kb_search", "scope": "root"}]},
            422,
            "scope",
        ),
        (
            "/api/v1/artifacts/prompt",
            {"name": "p", "content": {"template": "x", "variables_schema": {"type": 5}}},
            422,
            "variables_schema",
        ),
        (
            "/api/v1/artifacts/workflow",
            {"name": "support_case_resolution", "content": "workflow: [unclosed"},
            422,
            "invalid YAML",
        ),
        (
            "/api/v1/artifacts/workflow",
            {"name": "support_case_resolution", "content": "[" * 20_000},
            422,
            "nested too deeply",
        ),
        (
            "/api/v1/artifacts/workflow",
            {
                "name": "support_case_resolution",
                "content": "workflow: support_case_resolution\nversion: '1'\nsteps:\n- name: ask\n"
                "  human_if: ['true']\n  output_schema: " + "{items: " * 150 + "{}" + "}" * 150,
            },
            422,
            "nested too deeply",
        ),
        (
            "/api/v1/artifacts/policy_bundle",
            {"name": "big", "content": {"modules": {"a.rego": "#" * 300_000}}},
            422,
            "bytes",
        ),
        (
            "/api/v1/artifacts/model_config",
            {
                "name": "hosted",
                "content": {
                    "provider": "openai_compatible",
                    "model": "m",
                    "base_url": "https://svc:hunter2@models.example.org/v1",
                },
            },
            422,
            "must not carry a user or password",
        ),
        (
            "/api/v1/artifacts/tool",
            {
                "name": "crm.lookup",
                "content": {
                    "side_effect": "read",
                    "args_schema": {"type": "object"},
                    "result_schema": {"type": "object"},
                    "transport": {"type": "http", "url": "https://svc:hunter2@crm.example.org/lookup"},
                },
            },
            422,
            "must not carry a user or password",
        ),
        ("/api/v1/artifacts/spells", {"name": "p", "content": {}}, 404, "kind"),
        ("/api/v1/releases", {"workflow": "nope", "policy_bundle": "default"}, 422, "unknown workflow"),
        (
            "/api/v1/releases",
            {"workflow": "support_case_resolution@x", "policy_bundle": "default"},
            422,
            "version",
        ),
        (
            "/api/v1/releases",
            {"workflow": "support_case_resolution@²", "policy_bundle": "default"},
            422,
            "the version after '@' must be a number",
        ),
        ("/api/v1/agents", "{not json", 400, "Malformed JSON"),
    ],
    ids=[
        "unknown-field",
        "bad-slug",
        "slo-over-the-column",
        "bad-scope",
        "prompt-schema-not-a-schema",
        "invalid-yaml",
        "yaml-deeper-than-the-parser-goes",
        "yaml-deeper-than-the-limit",
        "oversized-rego",
        "password-in-a-model-url",
        "password-in-a-tool-url",
        "unknown-kind",
        "unknown-workflow",
        "bad-version",
        "superscript-version",
        "malformed-json",
    ],
)
def test_bad_input_is_a_4xx_and_saves_nothing(
    demo_registry, platform_user, client_for, path, body, status, needle
):
    client = client_for(platform_user, scopes=WRITE)
    counts = (Agent.objects.count(), Artifact.objects.count(), Release.objects.count())

    response = post(client, path, body)

    assert response.status_code == status, response.json()
    assert needle in json.dumps(response.json())
    assert (Agent.objects.count(), Artifact.objects.count(), Release.objects.count()) == counts


def test_release_flow_over_the_api(demo_registry, platform_user, client_for):
    client = client_for(platform_user, scopes=WRITE)
    release = Release.objects.get()
    again = post(
        client,
        "/api/v1/releases",
        {
            "workflow": "support_case_resolution",
            "policy_bundle": "default",
            "agents": release.manifest["agents"],
        },
    )
    assert again.status_code == 200 and again.json()["id"] == release.id

    gated = post(client, f"/api/v1/releases/{release.pk}/promote", {"channel": "production"})
    assert gated.status_code == 409
    assert "sign-offs" in gated.json()["detail"]
    assert post(client, f"/api/v1/releases/{release.pk}/signoffs", {}).status_code == 403  # the author

    for name in ("first", "second"):
        signer = client_for(UserFactory(username=name, roles=["platform"]), scopes=WRITE)
        assert post(signer, f"/api/v1/releases/{release.pk}/signoffs", {"comment": "ok"}).status_code == 201
    repeated = post(signer, f"/api/v1/releases/{release.pk}/signoffs", {"comment": "ok, really"})
    assert repeated.status_code == 200 and repeated.json()["comment"] == "ok"  # the sign-off as it stands
    assert (
        post(
            client, f"/api/v1/releases/{release.pk}/evaluations", {"suite": "golden", "score": "0.97"}
        ).status_code
        == 201
    )
    assert client.get(f"/api/v1/releases/{release.pk}").json()["gate_problems"] == []
    promoted = post(client, f"/api/v1/releases/{release.pk}/promote", {"channel": "production"})
    assert promoted.status_code == 200 and promoted.json()["release"] == release.pk

    diff = client.get(f"/api/v1/releases/{release.pk}/diff?against={release.pk}").json()
    assert {change["status"] for change in diff} == {"unchanged"}
    assert client.get(f"/api/v1/releases/{release.pk}/diff").status_code == 422
    assert post(client, "/api/v1/channels/support_case_resolution/production/rollback", {}).status_code == 409


def test_artifact_versions_over_the_api(demo_registry, platform_user, client_for):
    client = client_for(platform_user, scopes=WRITE)
    body = {
        "name": "triage",
        "content": {"template": "New {{ text }}", "variables_schema": {"type": "object"}},
    }
    assert post(client, "/api/v1/artifacts/prompt", body).status_code == 201
    assert post(client, "/api/v1/artifacts/prompt", body).status_code == 200
    versions = client.get("/api/v1/artifacts/prompt/triage").json()["results"]
    assert [v["version"] for v in versions] == [2, 1]
    assert (
        client.get("/api/v1/artifacts/prompt/triage/1").json()["content"]["template"].startswith("Classify")
    )
    assert client.get("/api/v1/artifacts/prompt/triage/9").status_code == 404
    for unknown in ("/api/v1/artifacts/prompt/triag", "/api/v1/artifacts/prompts/triage"):
        answer = client.get(unknown)
        assert answer.status_code == 404 and answer["Content-Type"] == "application/problem+json", unknown


def _count_queries(client, path):
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len(queries)


def test_list_endpoints_keep_their_query_count(demo_registry, platform_user, client_for):
    client = client_for(platform_user, scopes=READ)
    paths = [
        "/api/v1/agents",
        "/api/v1/releases",
        "/api/v1/artifacts/tool",
        "/api/v1/channels",
        "/api/v1/teams",
    ]
    client.get(paths[0])
    before = [_count_queries(client, path) for path in paths]
    for n in range(15):
        agent_services.agent_register(slug=f"bulk-{n}", display_name=f"Bulk {n}", actor="system:tests")
    for n in range(10):
        artifact_publish(
            kind="tool",
            name=f"tool-{n}",
            author=platform_user,
            actor="system:tests",
            content={
                "args_schema": {},
                "result_schema": {},
                "side_effect": "read",
                "transport": {"type": "sandbox"},
            },
        )
    Channel.objects.create(workflow="other", name="staging")
    assert [_count_queries(client, path) for path in paths] == before
