"""The approval inbox in a real Chromium, against a live server and a real worker.

Runs submitted over the API are executed by the worker up to their approval point; a reviewer
signs in, finds the request in the inbox, opens it and approves it with the keyboard, and the
worker finishes the run; another request is rejected with the keyboard and a typed reason.
The requester of a run is refused when they try to approve it.

Playwright's synchronous API runs an event loop while the browser is open, so the database is
only touched before the browser starts and after it closes; in between, everything is seen
through the pages, as a person would.
"""

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group

from approvals.models import ApprovalDecision
from controlplane.identity import ADMIN
from runs.models import Effect, PendingAction, Run

from .scenarios import LARGE_REFUND, SMALL_REFUND

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.usefixtures("worker")]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "approvals"
DOCS = Path(settings.BASE_DIR) / "docs"
TIMEOUT_MS = 30_000


@pytest.fixture
def chromium() -> Callable[[], AbstractContextManager]:
    """Opens the browser for a block of the test (no database access inside that block)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    @contextmanager
    def launched() -> Iterator:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()

    return launched


def submit(client, case_id: str, task_input: dict) -> str:
    response = client.post(
        "/api/v1/tasks",
        {
            "workflow": "support_case_resolution",
            "channel": "staging",
            "case_id": case_id,
            "input": task_input,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()["run_id"]


def parked(run_ids: list[str], worker, timeout: float = 60) -> dict[str, PendingAction]:
    """Wait until the worker has parked every run at its approval point."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        requests = {p.run_id: p for p in PendingAction.objects.filter(run_id__in=run_ids, status="pending")}
        if len(requests) == len(run_ids):
            return {str(run_id): request for run_id, request in requests.items()}
        time.sleep(0.2)
    raise AssertionError(f"runs did not park; worker log:\n{worker.log()[-3000:]}")


def sign_in(browser, base_url: str, username: str):
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{base_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")
    return page


def screenshot(page_or_element, name: str, *, for_readme: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page_or_element.screenshot(path=str(path))
    if for_readme:
        shutil.copyfile(path, DOCS / name)


def reviewer_sees_it_finish(browser, base_url: str, target: PendingAction, run_id: str) -> None:
    page = sign_in(browser, base_url, "reviewer")
    page.click("nav >> text=Approvals")
    page.wait_for_selector(f'tr[data-approval-id="{target.pk}"]')
    assert page.inner_text("#approval-count") == "3"
    assert "crm.update_case" in page.inner_text(f'tr[data-approval-id="{target.pk}"]')

    # j moves down the list, loading each request into the panel, until it reaches ours.
    for _ in range(3):
        page.keyboard.press("j")
        page.wait_for_function(
            "id => document.querySelector('tr.selected')?.dataset.approvalId === id"
            " && document.querySelector('#approval-panel [data-approval-id]')?.dataset.approvalId === id",
            arg=page.get_attribute("tr.selected", "data-approval-id"),
        )
        if page.get_attribute("#approval-panel [data-approval-id]", "data-approval-id") == str(target.pk):
            break
    panel_text = page.inner_text("#approval-panel")
    assert f"#{target.pk} support_case_resolution" in panel_text
    assert "crm.update_case" in panel_text and "CASE-1001" in panel_text
    assert "triage" in panel_text and "validate" in panel_text  # what the agent did
    # The list fits beside the panel: every column, the due time too, without scrolling sideways.
    assert page.locator("#approval-rows").evaluate("rows => rows.scrollWidth <= rows.clientWidth")
    screenshot(page, "inbox.png", for_readme=True)
    screenshot(page.locator("#approval-panel"), "approval-detail.png", for_readme=True)

    page.keyboard.press("a")

    page.wait_for_selector("text=: the run resumes.")
    assert page.query_selector(f'tr[data-approval-id="{target.pk}"]') is None
    page.wait_for_function("document.querySelector('#approval-count').textContent.trim() === '2'")

    # r goes to the reject reason; Enter sends it.
    page.keyboard.press("j")
    page.wait_for_selector("#approval-panel .reject-form")
    page.keyboard.press("r")
    assert page.evaluate("document.activeElement.name") == "reason"
    page.keyboard.type("Duplicate of another case")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=: the run follows its rejection path.")
    page.wait_for_function("document.querySelector('#approval-count').textContent.trim() === '1'")

    # The decided request stays in the history; its page follows the run until it ends.
    page.goto(f"{base_url}/approvals/history/")
    page.click(f'a[href="/approvals/{target.pk}/"]')
    page.wait_for_selector(f"#run-status-{run_id}:has-text('Succeeded')")
    assert "reviewer" in page.inner_text(".decisions")

    # The requester follows the same run on its page, which refreshes itself.
    requester_page = sign_in(browser, base_url, "requester")
    requester_page.goto(f"{base_url}/runs/{run_id}/")
    requester_page.wait_for_selector("#run-body h1 .status-succeeded")
    assert "crm.update_case" in requester_page.inner_text(".effects")


def test_a_reviewer_approves_a_parked_run_with_the_keyboard_and_sees_it_finish(
    chromium, live_server, worker, demo_registry, client_for, requester, reviewer
):
    api = client_for(requester)
    run_id = submit(api, "CASE-1001", SMALL_REFUND)  # parks before its irreversible commit
    others = [submit(api, "CASE-1002", LARGE_REFUND), submit(api, "CASE-1003", {"text": "Talk to a person"})]
    target = parked([run_id, *others], worker)[run_id]

    with chromium() as browser:
        reviewer_sees_it_finish(browser, live_server.url, target, run_id)

    run = Run.objects.get(pk=run_id)
    assert run.status == Run.Status.SUCCEEDED
    effect = Effect.objects.get(run=run)
    assert effect.status == Effect.Status.COMMITTED and effect.args == target.proposed_action["args"]
    assert PendingAction.objects.get(pk=target.pk).decisions.get().reviewer == reviewer
    rejected = ApprovalDecision.objects.get(decision="reject")
    assert (rejected.reviewer, rejected.reason) == (reviewer, "Duplicate of another case")
    assert str(rejected.pending_action.run_id) in others


def requester_is_refused(browser, base_url: str, target: PendingAction) -> None:
    page = sign_in(browser, base_url, "requester")
    page.goto(f"{base_url}/approvals/")
    assert page.query_selector(f'tr[data-approval-id="{target.pk}"]') is None  # not in their inbox
    page.goto(f"{base_url}/approvals/{target.pk}/")
    assert "separation of duties keeps you from deciding it" in page.inner_text("#approval-panel")

    page.keyboard.press("a")

    alert = page.wait_for_selector("#approval-panel .alert[role=alert]")
    assert "requester cannot approve their own request" in alert.inner_text()
    assert "Pending" in page.inner_text("#approval-panel h2")
    screenshot(page.locator("#approval-panel"), "approval-refused.png")


def test_the_requester_is_refused_when_trying_to_approve_their_own_request(
    chromium, live_server, worker, demo_registry, client_for, requester
):
    requester.groups.add(Group.objects.get(name=ADMIN))  # may open any request, yet not decide their own
    run_id = submit(client_for(requester), "CASE-2001", SMALL_REFUND)
    target = parked([run_id], worker)[run_id]

    with chromium() as browser:
        requester_is_refused(browser, live_server.url, target)

    assert PendingAction.objects.get(pk=target.pk).status == PendingAction.Status.PENDING
    assert not target.decisions.exists()
    assert Run.objects.get(pk=run_id).status == Run.Status.WAITING_APPROVAL
