"""Registry pages in a real Chromium against a live server: what loads after the page."""

import pytest

from tests.approvals.test_pages_in_browser import chromium, page_signed_in  # noqa: F401 (a fixture)
from tests.factories import RunFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("chromium")]
DESKTOP = {"width": 1280, "height": 900}


def test_the_agent_page_keeps_its_facts_once_its_recent_runs_have_loaded(
    live_server, client, reviewer, demo_registry
):
    from playwright.sync_api import expect

    run = RunFactory(release_id=demo_registry.releases[0], requested_by=reviewer)
    with page_signed_in(live_server, client, reviewer, DESKTOP) as page:
        page.goto(f"{live_server.url}/registry/agents/case_manager/")

        expect(page.locator(f'#run-rows a[href="/runs/{run.pk}/"]')).to_be_visible()  # loaded
        expect(page.get_by_role("heading", name="Releases that use it")).to_be_visible()
        expect(page.locator(".facts code", has_text="agent.case_manager")).to_be_visible()
        expect(page.get_by_role("heading", name="History")).to_be_visible()
