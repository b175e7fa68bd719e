"""The inbox on a phone, in a real Chromium against a live server: what a tap on a request does.

Playwright's synchronous API runs an event loop while the browser is open, so the database is
only touched before the browser starts."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings

from .test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS
from .test_pages import pending_request

pytestmark = pytest.mark.browser
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")


@contextmanager
def page_signed_in(live_server, client, user, viewport: dict) -> Iterator:
    """A Chromium page with the session of `client`, signed in as `user` first."""
    from playwright.sync_api import sync_playwright

    client.force_login(user)
    cookie = {
        "name": settings.SESSION_COOKIE_NAME,
        "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=viewport)
            context.add_cookies([{**cookie, "url": live_server.url}])
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def test_a_request_opened_on_a_phone_comes_into_view_below_the_list(live_server, chromium, client, reviewer):
    from playwright.sync_api import expect

    requests = [pending_request() for _ in range(8)]  # a list taller than the screen
    with page_signed_in(live_server, client, reviewer, PHONE) as page:
        page.goto(f"{live_server.url}/approvals/")
        page.locator(f'#approval-rows a[href="/approvals/{requests[0].pk}/"]').click()

        panel = page.locator(f"#approval-panel #approval-{requests[0].pk}")
        expect(panel).to_be_focused()  # a screen reader and the next Tab go on from the request
        expect(panel.locator(".approve-form button")).to_be_in_viewport()
