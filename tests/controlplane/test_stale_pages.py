"""Pages left open while the session changed. One whose session ended: its next htmx request
sends the browser to the sign-in page as a whole page (which leads back to that page), not a
sign-in form swapped into the fragment that asked. One opened before the user signed in again
(a new CSRF token): its form gets a page saying so, with the way back, not Django's bare 403."""

import pytest
from django.test import Client

from tests.factories import RunFactory

pytestmark = pytest.mark.django_db


def test_an_htmx_poll_without_a_session_sends_the_browser_to_sign_in(client):
    polled = client.get(
        "/approvals/",
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/approvals/?risk=high",
    )
    assert polled.status_code == 200 and polled.content == b""
    assert polled["HX-Redirect"] == "/login/?next=%2Fapprovals%2F%3Frisk%3Dhigh"


def test_an_htmx_decision_without_a_session_changes_nothing_and_leads_back(client, requester):
    run = RunFactory(requested_by=requester, status="waiting_approval")
    answered = client.post(
        f"/runs/{run.pk}/cancel/",
        {"reason": "late"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL=f"http://testserver/runs/{run.pk}/",
    )
    assert answered["HX-Redirect"] == f"/login/?next=%2Fruns%2F{run.pk}%2F"
    run.refresh_from_db()
    assert run.status == "waiting_approval"


def test_another_sites_page_is_not_where_sign_in_leads(client):
    polled = client.get("/runs/", HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="https://elsewhere.example/")
    assert polled["HX-Redirect"] == "/login/?next=%2Fruns%2F"


def test_a_page_load_without_a_session_is_redirected_as_before(client):
    response = client.get("/approvals/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/approvals/"


@pytest.fixture
def stale_page(reviewer):
    """A reviewer's browser whose page holds a CSRF token that is no longer theirs."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    return client


def test_a_stale_form_sent_by_htmx_gets_the_reason_in_place(stale_page, requester):
    run = RunFactory(requested_by=requester, status="waiting_approval")
    answered = stale_page.post(
        "/approvals/1/decision/",
        {"decision": "approve"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/approvals/?risk=high",
    )
    html = answered.content.decode()
    assert answered.status_code == 403
    assert "This page is out of date" in html and "Nothing was saved" in html
    assert 'href="/approvals/?risk=high"' in html and "<html" not in html
    run.refresh_from_db()
    assert run.status == "waiting_approval"


def test_a_stale_form_without_javascript_gets_a_whole_page_back_to_where_it_was(stale_page):
    same_site = stale_page.post("/logout/", HTTP_REFERER="http://testserver/runs/?status=failed")
    page = same_site.content.decode()
    assert same_site.status_code == 403
    assert "<html" in page and 'href="/runs/?status=failed"' in page

    elsewhere = stale_page.post("/logout/", HTTP_REFERER="https://elsewhere.example/phish").content.decode()
    assert 'href="/"' in elsewhere and "elsewhere.example" not in elsewhere

    for path_to_elsewhere in (
        "http://testserver//elsewhere.example/x",
        "http://testserver/\\elsewhere.example/x",
    ):
        page = stale_page.post("/logout/", HTTP_REFERER=path_to_elsewhere).content.decode()
        assert 'href="/"' in page and "elsewhere.example" not in page


def test_a_sign_in_lasts_a_working_day(client, reviewer):
    client.force_login(reviewer)
    assert client.session.get_expiry_age() == 12 * 60 * 60
