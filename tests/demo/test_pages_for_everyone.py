"""Every page of the demo, as each role sees it, in a real Chromium: it fits a phone's width
(nothing scrolls the page sideways; a wide table scrolls inside itself, so a reviewer can
decide from a phone), axe-core finds nothing against WCAG 2.1 A and AA on it, and nothing on it
breaks the Content-Security-Policy (scripts from this site only). A page whose session ends
while it is open leads to the sign-in page and back."""

from pathlib import Path

import pytest
from django.conf import settings

from demo.services import demo_load
from policy.models import PolicyDecision
from registry.models import Artifact, Channel
from runs.models import PendingAction
from tests.approvals.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.usefixtures("worker")]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
AXE = Path(__file__).resolve().parent.parent / "support" / "vendor" / "axe-core" / "axe.min.js"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def parked_before_a_tool_call() -> PendingAction:
    before_a_tool_call = PendingAction.objects.filter(
        status=PendingAction.Status.PENDING, proposed_action__has_key="tool"
    )
    return wait_for(before_a_tool_call.first, what="a demo run parked before its tool call")


def pages_by_user() -> dict[str, list[str]]:
    pending = parked_before_a_tool_call()
    production = Channel.objects.get(workflow="support_case_resolution", name="production")
    artifact = Artifact.objects.order_by("pk").first()
    decision = PolicyDecision.objects.order_by("pk").first()
    return {
        "reviewer": ["/", "/approvals/", f"/approvals/{pending.pk}/", "/approvals/history/"],
        "platform": [
            "/runs/",
            f"/runs/{pending.run_id}/",
            "/runs/dead-letters/",
            "/registry/agents/",
            "/registry/releases/",
            f"/registry/releases/{production.release_id}/",
            f"/registry/releases/diff/?from={production.baseline_id}&to={production.release_id}",
            "/registry/artifacts/",
            f"/registry/artifacts/{artifact.kind}/{artifact.name}/",
            "/monitoring/",
            "/policy/decisions/",
            f"/policy/decisions/{decision.pk}/",
            "/policy/impact/",
            "/replays/",
        ],
        "auditor": ["/evidence/", "/approvals/history/"],
    }


def visit_every_page(base_url: str, viewport: dict, look, bypass_csp: bool = False) -> dict[str, object]:
    """`look(page)` on each page of `pages_by_user()`, signed in as its user; what it found, by page.
    Each page's Content-Security-Policy violations are collected too, and must be none (unless
    `bypass_csp`: a look that injects a script of its own)."""
    from playwright.sync_api import sync_playwright

    demo_load()
    pages, found, violations = pages_by_user(), {}, []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for username, paths in pages.items():
                page = browser.new_context(viewport=viewport, bypass_csp=bypass_csp).new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.on(
                    "console", lambda message, page=page: _note_csp_violation(message, page.url, violations)
                )
                page.goto(f"{base_url}/login/")
                if username == "reviewer":  # the sign-in page is a page too
                    found["signed out /login/"] = look(page)
                page.fill("#id_username", username)
                page.fill("#id_password", f"{username}-demo-pass")
                page.click("button[type=submit]")
                page.wait_for_url(f"{base_url}/")
                for path in paths:
                    response = page.goto(f"{base_url}{path}")
                    assert response.status == 200, (username, path, response.status)
                    found[f"{username} {path}"] = look(page)
        finally:
            browser.close()
    assert not violations, f"Content-Security-Policy violations: {violations}"
    return {where: what for where, what in found.items() if what}


def _note_csp_violation(message, url: str, violations: list) -> None:
    if "Content Security Policy" in message.text:
        violations.append(f"{url}: {message.text[:300]}")


@pytest.fixture
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")


def test_no_page_scrolls_sideways_on_a_phone(live_server, chromium):
    def overflow(page) -> int:
        width = page.evaluate("document.documentElement.scrollWidth")
        return width if width > PHONE["width"] else 0

    too_wide = visit_every_page(live_server.url, PHONE, overflow)
    assert not too_wide, f"pages wider than {PHONE['width']} px: {too_wide}"


def test_no_page_breaks_wcag_aa(live_server, chromium):
    def violations(page) -> list[str]:
        page.add_script_tag(path=str(AXE))
        found = page.evaluate(
            "async (tags) => (await axe.run(document, {runOnly: tags})).violations"
            ".map(v => `${v.id}: ${v.nodes.map(n => n.target.join(' ')).slice(0, 3).join(', ')}`)",
            WCAG_AA,
        )
        return found

    broken = visit_every_page(live_server.url, DESKTOP, violations, bypass_csp=True)
    assert not broken, f"axe-core found: {broken}"


def test_a_page_whose_session_ended_leads_to_sign_in_and_back(live_server, chromium):
    from playwright.sync_api import expect, sync_playwright

    demo_load()
    run_page = f"/runs/{parked_before_a_tool_call().run_id}/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=DESKTOP)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{live_server.url}/login/?next={run_page}")
            page.fill("#id_username", "platform")
            page.fill("#id_password", "platform-demo-pass")
            page.click("button[type=submit]")
            page.wait_for_url(f"{live_server.url}{run_page}")
            context.clear_cookies()  # the session ends (signed out elsewhere, expired)

            # The page polls while its run waits: the next poll takes the browser to sign in.
            page.wait_for_url("**/login/?next=%2Fruns%2F*", timeout=10_000)
            expect(page.locator("#approval-rows, #run-body")).to_have_count(0)
            page.fill("#id_username", "platform")
            page.fill("#id_password", "platform-demo-pass")
            page.click("button[type=submit]")
            page.wait_for_url(f"{live_server.url}{run_page}")
        finally:
            browser.close()


def test_the_api_docs_render_under_the_content_security_policy(live_server, chromium, client, platform_user):
    """Swagger UI (vendored) loads its set-up as a script file, not inline, so it runs under
    the same policy as every page."""
    from playwright.sync_api import expect, sync_playwright

    client.force_login(platform_user)  # the docs are for signed-in users
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    violations = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=DESKTOP)
            cookie = {"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}
            context.add_cookies([cookie])
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("console", lambda message: _note_csp_violation(message, page.url, violations))
            response = page.goto(f"{live_server.url}/api/docs/")
            assert "script-src 'self'" in response.headers["content-security-policy"]
            expect(page.get_by_text("/api/v1/approvals/{id}/decision").first).to_be_visible()
        finally:
            browser.close()
    assert not violations, violations
