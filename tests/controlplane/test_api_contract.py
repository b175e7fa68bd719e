"""What the API answers is what its OpenAPI schema says: every status documented, every body
(success and problem details alike) valid against the schema of its status and media type.
"""

import re

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.test import override_settings
from drf_spectacular.generators import SchemaGenerator
from jsonschema import Draft202012Validator, FormatChecker
from rest_framework.test import APIClient

from controlplane.identity import SCOPES
from registry.models import Agent, Artifact, Release
from replays.models import Replay
from replays.services import replay_batch_request
from runs.models import PendingAction, Run
from tests.factories import RunFactory, UserFactory

pytestmark = pytest.mark.django_db

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
SUBMISSION = {
    "workflow": "support_case_resolution",
    "case_id": "CONTRACT-1",
    "input": {"text": "refund please"},
    "channel": "staging",
}


# `format: uri` is what the API's URL fields accept (jsonschema checks no URIs by itself).
FORMATS = FormatChecker()
FORMATS.checks("uri", raises=ValidationError)(lambda value: URLValidator()(value) is None)


@pytest.fixture(scope="module")
def openapi_schema():
    """The schema /api/schema/ serves."""
    return SchemaGenerator().get_schema(request=None, public=True)


@pytest.fixture(scope="module")
def served_schema(openapi_schema):
    """The served schema, its OpenAPI 3.0 `nullable` spelled as JSON Schema, and every object
    closed to fields it does not name (an answer's undocumented field fails) unless it says
    otherwise."""
    return _closed_objects(_json_schema_nulls(openapi_schema))


def _json_schema_nulls(schema):
    if isinstance(schema, list):
        return [_json_schema_nulls(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _json_schema_nulls(value) for key, value in schema.items() if key != "nullable"}
    return {"anyOf": [converted, {"type": "null"}]} if schema.get("nullable") is True else converted


def _closed_objects(schema):
    if isinstance(schema, list):
        return [_closed_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _closed_objects(value) for key, value in schema.items()}
    if schema.get("type") == "object" and "properties" in schema:
        converted.setdefault("additionalProperties", False)
    return converted


def _operation_of(schema: dict, method: str, path: str) -> tuple[str, dict]:
    for template, operations in schema["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if method in operations and re.match(pattern, path):
            return template, operations[method]
    raise AssertionError(f"{method.upper()} {path} is not in the schema")


def assert_documented(schema: dict, method: str, url: str, response) -> None:
    """The response's status and media type are documented for the operation, and its body is
    valid against the schema documented for them."""
    path = url.split("?")[0]
    template, operation = _operation_of(schema, method, path)
    where = f"{method.upper()} {template} -> {response.status_code}"
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{where} is not documented"
    media_type = response["Content-Type"].split(";")[0]
    assert media_type in documented.get("content", {}), f"{where}: {media_type} is not documented"
    if not media_type.endswith("json"):  # a file (the evidence archive): its media type is the contract
        return
    body_schema = documented["content"][media_type]["schema"]
    validator = Draft202012Validator(
        {**body_schema, "components": schema["components"]}, format_checker=FORMATS
    )
    errors = sorted(validator.iter_errors(response.json()), key=lambda error: list(error.path))
    assert not errors, f"{where}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


@pytest.fixture
def everything(client_for, admin_user, platform_user, requester, demo_registry):
    """Something behind every read of the API, with the fields that may be null left null."""
    Agent.objects.create(slug="ownerless", service_user=UserFactory(username="svc-ownerless"))
    api = client_for(admin_user, tuple(SCOPES))
    run_id = api.post("/api/v1/tasks", SUBMISSION, format="json").json()["run_id"]
    waiting = RunFactory(requested_by=requester, status=Run.Status.WAITING_APPROVAL, current_state="commit")
    pending = PendingAction.objects.create(
        run=waiting, state="commit", proposed_action={"tool": "crm.update_case", "args": {"case_id": "C-1"}}
    )
    release = Release.objects.get()
    batch = replay_batch_request(release=release, last_n=1, reason="contract", user=platform_user)
    # A shadow rollout's replay, which the control plane asks for itself: no person requested it.
    Replay.objects.create(run_id=run_id, release_id=release.pk, mode="what_if", reason="shadow", shadow=True)
    artifact = Artifact.objects.order_by("pk").first()
    return {
        "api": api,
        "run": run_id,
        "pending": pending.pk,
        "release": release.pk,
        "batch": batch.pk,
        "artifact": f"{artifact.kind}/{artifact.name}",
        "version": artifact.version,
    }


def test_every_read_answers_as_documented(served_schema, everything):
    api = everything["api"]
    decision = api.get("/api/v1/policy/decisions").json()["results"][0]["id"]
    reads = [
        "/api/v1/agents",
        "/api/v1/agents/ownerless",
        "/api/v1/teams",
        "/api/v1/channels",
        "/api/v1/releases",
        f"/api/v1/releases/{everything['release']}",
        f"/api/v1/releases/{everything['release']}/diff?against={everything['release']}",
        f"/api/v1/artifacts/{everything['artifact'].split('/')[0]}",
        f"/api/v1/artifacts/{everything['artifact']}",
        f"/api/v1/artifacts/{everything['artifact']}/{everything['version']}",
        "/api/v1/runs",
        f"/api/v1/runs/{everything['run']}",
        f"/api/v1/runs/{everything['run']}/events",
        "/api/v1/approvals?status=pending",
        f"/api/v1/approvals/{everything['pending']}",
        "/api/v1/policy/decisions",
        f"/api/v1/policy/decisions/{decision}",
        "/api/v1/audit/verify",
        "/api/v1/audit/status",
        "/api/v1/evidence/public-key",
        f"/api/v1/evidence?run={everything['run']}&format=json",
        "/api/v1/replays",
        f"/api/v1/replay-batches/{everything['batch']}",
    ]
    for url in reads:
        response = api.get(url)
        assert response.status_code == 200, (url, response.content[:300])
        assert_documented(served_schema, "get", url, response)


def test_writes_answer_as_documented(served_schema, everything):
    api = everything["api"]
    submitted = api.post("/api/v1/tasks", SUBMISSION | {"case_id": "CONTRACT-2"}, format="json")
    run = submitted.json()["run_id"]
    writes = [
        ("/api/v1/tasks", 201, submitted),
        ("/api/v1/agents/ownerless/keys", 201, api.post("/api/v1/agents/ownerless/keys", {}, format="json")),
        (
            f"/api/v1/runs/{run}/cancel",
            200,
            api.post(f"/api/v1/runs/{run}/cancel", {"reason": "contract"}, format="json"),
        ),
        (
            "/api/v1/policy/evaluate",
            200,
            api.post("/api/v1/policy/evaluate", {"decision_point": "run.start", "input": {}}, format="json"),
        ),
    ]
    for url, status, response in writes:
        assert response.status_code == status, (url, response.content[:300])
        assert_documented(served_schema, "post", url, response)


@override_settings(MAX_REQUEST_BODY_BYTES=2048)
def test_every_kind_of_error_answers_as_documented(served_schema, everything, client_for, requester):
    api, run = everything["api"], everything["run"]
    finished = RunFactory(status=Run.Status.SUCCEEDED)
    errors = [
        (401, "get", "/api/v1/runs", APIClient().get("/api/v1/runs")),
        (403, "post", f"/api/v1/runs/{run}/cancel", client_for(requester).post(f"/api/v1/runs/{run}/cancel")),
        (404, "get", f"/api/v1/runs/{ZERO_UUID}", api.get(f"/api/v1/runs/{ZERO_UUID}")),
        (404, "get", "/api/v1/runs?cursor=garbage", api.get("/api/v1/runs?cursor=garbage")),
        (404, "get", f"/api/v1/evidence?run={ZERO_UUID}", api.get(f"/api/v1/evidence?run={ZERO_UUID}")),
        (400, "post", "/api/v1/tasks", api.post("/api/v1/tasks", "{", content_type="application/json")),
        (415, "post", "/api/v1/tasks", api.post("/api/v1/tasks", "text", content_type="text/plain")),
        (
            413,
            "post",
            "/api/v1/tasks",
            api.post("/api/v1/tasks", {"input": {"text": "x" * 4096}}, format="json"),
        ),
        (422, "post", "/api/v1/tasks", api.post("/api/v1/tasks", {}, format="json")),
        (422, "get", "/api/v1/runs?status=bogus", api.get("/api/v1/runs?status=bogus")),
        (409, "post", f"/api/v1/runs/{finished.pk}/cancel", api.post(f"/api/v1/runs/{finished.pk}/cancel")),
    ]
    for status, method, url, response in errors:
        assert response.status_code == status, (url, response.status_code, response.content[:300])
        assert response["Content-Type"] == "application/problem+json"
        assert_documented(served_schema, method, url, response)


def test_every_operation_documents_its_problems(client, requester):
    """The schema the API serves (OpenAPI 3.0) names the problem details of each operation."""
    client.force_login(requester)
    schema = client.get("/api/schema/?format=json").json()
    assert set(schema["components"]["schemas"]["Problem"]["required"]) == {
        "type",
        "title",
        "status",
        "detail",
    }
    for template, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"401", "403"} <= codes, (method, template)
            assert "{" not in template or "404" in codes, (method, template)
            assert "requestBody" not in operation or {"400", "413", "415", "422"} <= codes, (method, template)
            problem = operation["responses"]["403"]["content"]["application/problem+json"]["schema"]
            assert problem == {"$ref": "#/components/schemas/Problem"}
    dry_run = schema["paths"]["/api/v1/policy/evaluate"]["post"]
    assert "409" not in dry_run["responses"] and dry_run["x-changes-nothing"] is True
    assert "409" in schema["paths"]["/api/v1/runs/{id}/cancel"]["post"]["responses"]


def test_the_schema_says_what_the_api_refuses(openapi_schema):
    """A client built from the schema sends what the API takes: request bodies closed to unknown
    fields, query enums of their parameter's type, page sizes within bounds, required queries."""
    schemas = openapi_schema["components"]["schemas"]
    for template, operations in openapi_schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {template}"
            if "requestBody" in operation:
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                assert schemas[body["$ref"].split("/")[-1]]["additionalProperties"] is False, where
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                python_type = {"string": str, "integer": int, "boolean": bool}[schema["type"]]
                assert all(isinstance(value, python_type) for value in schema.get("enum", [])), (
                    where,
                    parameter,
                )
                if parameter["name"] == "page_size":
                    assert (schema["minimum"], schema["maximum"]) == (1, 200), where
    diff = openapi_schema["paths"]["/api/v1/releases/{id}/diff"]["get"]["parameters"]
    assert next(p for p in diff if p["name"] == "against")["required"] is True
    issued = openapi_schema["paths"]["/api/v1/agents/{slug}/keys"]["post"]["responses"]["201"]
    key = issued["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    assert {"key", "prefix", "scopes", "expires_at"} <= set(schemas[key]["properties"])
