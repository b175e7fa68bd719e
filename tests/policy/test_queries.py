"""The decision log's reads: a constant number of queries, and an index under each filter."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.identity import Actor
from policy.bundles import shipped_default_bundle
from policy.models import PolicyDecision
from policy.services import policy_decide
from registry.services.artifacts import artifact_publish
from tests.support.query_plans import plans_reading, postgresql_only

from .bundles import bundle
from .test_api import READ, tool_call

pytestmark = pytest.mark.django_db


@postgresql_only
def test_the_log_filtered_by_failure_reads_the_failed_decisions_alone(signed_in, client_for, auditor):
    allowed = policy_decide("tool.call", tool_call(10), bundle=bundle(), run_id="r-ok")
    policy_decide("tool.call", tool_call(10), bundle=bundle("decision := {"), run_id="r-failed")
    # A production log: failures are a handful among the decisions made.
    like_allowed = PolicyDecision.objects.get(pk=allowed.decision_id)
    values = {
        field.attname: getattr(like_allowed, field.attname)
        for field in PolicyDecision._meta.concrete_fields
        if not field.primary_key
    }
    PolicyDecision.objects.bulk_create(PolicyDecision(**values) for _ in range(3000))
    browser, api = signed_in(auditor), client_for(auditor, scopes=READ)

    page = plans_reading(
        "policy_policydecision",
        lambda: browser.get("/policy/decisions/?failure=policy_unavailable").content.decode(),
    )
    listed = api.get("/api/v1/policy/decisions?failure=policy_unavailable").json()["results"]
    endpoint = plans_reading(
        "policy_policydecision", lambda: api.get("/api/v1/policy/decisions?failure=policy_unavailable")
    )

    assert [decision["run_id"] for decision in listed] == ["r-failed"]
    # The page counts its rows and reads one page of them; the endpoint reads a page.
    assert len(page) == 2 and len(endpoint) == 1
    assert all("decision_failure_idx" in plan for plan in page + endpoint), page + endpoint


def test_the_impact_page_keeps_its_query_count(signed_in, platform_user):
    actor = Actor("platform", roles=frozenset({"platform"}))
    content = shipped_default_bundle().content
    artifact_publish(kind="policy_bundle", name="default", content=content, author=platform_user, actor=actor)
    client = signed_in(platform_user)

    def report() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as queries:
            html = client.get("/policy/impact/?bundle=default@1").content.decode()
        return len(queries), html

    policy_decide("tool.call", tool_call(100), bundle=shipped_default_bundle(), run_id="r-1")
    few, _ = report()
    for amount in range(200, 1000, 100):
        policy_decide("tool.call", tool_call(amount), bundle=shipped_default_bundle(), run_id=f"r-{amount}")
    many, html = report()

    assert "9 decisions" in html
    assert many == few
