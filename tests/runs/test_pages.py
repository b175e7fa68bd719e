import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.audit import record
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client):
    def sign_in(user):
        client.force_login(user)
        return client

    return sign_in


def test_run_page_shows_status_steps_and_transitions(signed_in, requester):
    run = RunFactory(requested_by=requester, input={"text": "<script>alert(1)</script>"})
    record("system:worker", "run.started", run, {"state": "classify"}, run_id=run.pk)

    page = signed_in(requester).get(f"/runs/{run.pk}/")

    html = page.content.decode()
    assert page.status_code == 200
    assert "Queued" in html and "run.started" in html and run.case_id in html
    assert "<script>alert(1)</script>" not in html  # untrusted input is escaped
    assert 'hx-trigger="every 2s"' in html  # an active run polls for updates


def test_finished_run_page_stops_polling(signed_in, requester):
    run = RunFactory(requested_by=requester, status="succeeded")
    html = signed_in(requester).get(f"/runs/{run.pk}/").content.decode()
    assert "hx-trigger" not in html


def test_htmx_request_gets_only_the_fragment(signed_in, requester):
    run = RunFactory(requested_by=requester)
    fragment = signed_in(requester).get(f"/runs/{run.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and 'id="run-body"' in fragment


def test_other_peoples_runs_are_not_found(signed_in, requester, outsider):
    run = RunFactory(requested_by=requester)
    assert signed_in(outsider).get(f"/runs/{run.pk}/").status_code == 404


def test_run_list_filters_and_keeps_its_query_count(signed_in, platform_user):
    client = signed_in(platform_user)
    RunFactory.create_batch(2)
    RunFactory(status="failed", case_id="FAILED-ONE")
    with CaptureQueriesContext(connection) as few:
        assert client.get("/runs/").status_code == 200
    RunFactory.create_batch(25)
    with CaptureQueriesContext(connection) as many:
        page = client.get("/runs/")
    assert len(many) == len(few)
    assert page.content.decode().count('href="/runs/') >= 28

    failed_only = client.get("/runs/?status=failed").content.decode()
    assert "FAILED-ONE" in failed_only and failed_only.count("status-failed") == 1


def test_session_api_writes_need_the_csrf_token(requester):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(requester)
    response = client.post(
        "/api/v1/tasks",
        {"workflow": "builtin.intake", "case_id": "C", "input": {}},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_unknown_page_is_a_friendly_404(signed_in, requester):
    page = signed_in(requester).get("/no-such-page/")
    assert page.status_code == 404
    assert b"There is nothing at this address" in page.content
