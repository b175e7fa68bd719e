"""The README walk-through, in a real Chromium against the demo on a live server and a real
worker: each page it shows works as written, and its screenshots are taken here (docs/)."""

import shutil
import time
from pathlib import Path

import pytest
from django.conf import settings

from demo.services import demo_load
from registry.models import Channel
from runs.models import Run
from tests.approvals.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.usefixtures("worker")]
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "walkthrough"
DOCS = Path(settings.BASE_DIR) / "docs"


def settled_pipeline_run(timeout: float = 60) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.filter(case_id="orders_daily/2026-11-19", status=Run.Status.SUCCEEDED).first()
        if run:
            return run
        time.sleep(0.3)
    raise AssertionError("the clean batch's demo run did not finish")


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=False)
    shutil.copyfile(ARTIFACTS / name, DOCS / name)


def sign_in(browser, base_url: str, username: str):
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{base_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-demo-pass")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")
    return page


def test_the_walkthrough_pages_work_as_written(live_server, settings, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    settings.EVIDENCE_EXPORT_DIR = str(tmp_path)
    demo_load()
    run = settled_pipeline_run()
    production = Channel.objects.get(workflow="support_case_resolution", name="production")
    base = live_server.url

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            platform = sign_in(browser, base, "platform")
            expect(platform.get_by_text("As a platform engineer:")).to_be_visible()
            platform.goto(f"{base}/runs/{run.pk}/")
            expect(platform.get_by_text("publish").first).to_be_visible()
            shoot(platform, "walkthrough-run.png")
            platform.goto(
                f"{base}/registry/releases/diff/?from={production.baseline_id}&to={production.release_id}"
            )
            expect(platform.get_by_text("builtin-tuned").first).to_be_visible()
            shoot(platform, "walkthrough-release-diff.png")
            platform.goto(f"{base}/monitoring/")
            expect(platform.get_by_text(f"Canary {production.release_id}")).to_be_visible()
            shoot(platform, "walkthrough-dashboard.png")
            platform.goto(f"{base}/runs/{run.pk}/")
            platform.click("text=Replay this run")
            platform.fill("#id_reason", "walk-through: does it replay as it ran?")
            platform.click("button:has-text('Replay')")
            expect(platform.locator("#replay-report .status-reproduced")).to_be_visible(timeout=60_000)
            expect(platform.get_by_text("Step by step")).to_be_visible()
            shoot(platform, "walkthrough-replay.png")

            auditor = sign_in(browser, base, "auditor")
            auditor.goto(f"{base}/evidence/")
            auditor.fill("#id_run", str(run.pk))
            auditor.click("text=Build package")
            expect(auditor.locator("#exports .status-ready")).to_be_visible(timeout=60_000)
            expect(auditor.get_by_text("baton-evidence-")).to_be_visible()
            shoot(auditor, "walkthrough-evidence.png")

            reviewer = sign_in(browser, base, "reviewer")
            reviewer.goto(f"{base}/approvals/")
            expect(reviewer.get_by_text("steward_approval").first).to_be_visible()
            shoot(reviewer, "walkthrough-inbox.png")
        finally:
            browser.close()
