"""What the API says when a request is not one it can answer: a method the endpoint does not
have, a query parameter it does not know, a page size out of bounds, an error from a view that
renders something other than JSON. Each is a problem-details answer, never a silent guess."""

import json

import pytest
from rest_framework.test import APIClient

from controlplane.identity import SCOPES

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
FILTERED_LISTS = [
    "/api/v1/runs",
    "/api/v1/approvals",
    "/api/v1/agents",
    "/api/v1/releases",
    "/api/v1/channels",
    "/api/v1/policy/decisions",
    "/api/v1/replays",
]


def problem_of(response) -> dict:
    assert response["Content-Type"] == PROBLEM, (response.status_code, response.content[:200])
    return json.loads(response.content)


@pytest.mark.parametrize("scopes", [tuple(SCOPES), ()])
def test_a_method_the_endpoint_does_not_have_is_405_with_the_ones_it_has(client_for, admin_user, scopes):
    api = client_for(admin_user, scopes)
    cases = [
        ("delete", "/api/v1/runs", "GET"),
        ("put", "/api/v1/tasks", "POST"),
        ("post", "/api/v1/runs/00000000-0000-0000-0000-000000000000", "GET"),
        ("delete", "/api/v1/agents/someone", "PATCH"),
    ]
    for method, url, allowed in cases:
        answer = getattr(api, method)(url)
        assert answer.status_code == 405, (method, url, answer.content)
        assert problem_of(answer)["type"] == "urn:baton:problem:method-not-allowed"
        assert allowed in answer["Allow"]


def test_an_anonymous_call_of_a_method_the_endpoint_does_not_have_is_still_401():
    assert APIClient().delete("/api/v1/runs").status_code == 401


def test_the_schema_view_refuses_in_problem_json_and_the_docs_page_asks_to_sign_in(client, admin_user):
    docs = client.get("/api/docs/")
    assert docs.status_code == 302 and docs.url == "/login/?next=/api/docs/"
    cases = [(APIClient().get("/api/schema/"), 401)]
    client.force_login(admin_user)
    cases += [
        (client.get("/api/schema/", HTTP_ACCEPT="text/html"), 406),
        (client.post("/api/schema/"), 405),
    ]
    for answer, status in cases:
        assert answer.status_code == status
        assert problem_of(answer)["status"] == status


@pytest.mark.parametrize("url", FILTERED_LISTS)
def test_an_unknown_query_parameter_is_refused_not_ignored(client_for, admin_user, url):
    api = client_for(admin_user, tuple(SCOPES))

    misspelt = api.get(url, {"stauts": "failed"})

    assert misspelt.status_code == 422
    assert problem_of(misspelt)["errors"] == {"stauts": ["Unknown query parameter."]}
    assert api.get(url, {"format": "json"}).status_code == 200


@pytest.mark.parametrize("size", ["abc", "0", "-1", "201", "1.5", "٣", " 5"])
def test_a_page_size_out_of_bounds_is_refused_not_replaced(client_for, admin_user, size):
    answer = client_for(admin_user, tuple(SCOPES)).get("/api/v1/runs", {"page_size": size})

    assert answer.status_code == 422
    assert problem_of(answer)["errors"] == {"page_size": ["An integer from 1 to 200."]}
