"""The approval pages: inbox, detail panel, decisions without JavaScript, history, live count."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.html import escape

from approvals.models import ApprovalDecision
from controlplane.identity import ADMIN, AGENT, REVIEWER
from controlplane.models import AuditEvent
from runs.models import PendingAction, Run, StepCheckpoint
from tests.factories import RunFactory, UserFactory

from .scenarios import LARGE_REFUND, clear

pytestmark = pytest.mark.django_db

HOSTILE = '<img src=x onerror="alert(1)">'
SCRIPT = "</pre><script>steal()</script>"


def pending_request(due_in: timedelta | None = None, **fields) -> PendingAction:
    """A request parked on a built-in run, without running the engine: for lists and counts."""
    run_fields = {key: fields.pop(key) for key in ("requested_by", "sensitivity", "input") if key in fields}
    run = RunFactory(status=Run.Status.WAITING_APPROVAL, current_state="commit", **run_fields)
    values = {
        "state": "commit",
        "reasons": ["crm.update_case is irreversible"],
        "proposed_action": {"tool": "crm.update_case", "args": {"case_id": run.case_id, "resolution": "ok"}},
        "action_hash": "a" * 64,
        "risk": {"side_effect": "irreversible", "amount": 120, "sensitivity": "internal"},
        "approvers": ["reviewer"],
        "quorum": 1,
        **fields,
    }
    pending = PendingAction.objects.create(run=run, **values)  # the approvals app sets its due time
    if due_in is not None:
        PendingAction.objects.filter(pk=pending.pk).update(due_at=timezone.now() + due_in)
        pending.refresh_from_db()
    return pending


def html_of(response) -> str:
    return response.content.decode()


# --- Who may see what --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "inbox", "history", "detail"),
    [
        ("reviewer", 200, 200, 200),
        ("platform_user", 200, 200, 404),  # not in the request's approver group
        ("admin_user", 200, 200, 200),
        ("auditor", 403, 200, 200),  # reads everything, decides nothing
        ("outsider", 403, 403, 403),
    ],
)
def test_permission_matrix_for_the_pages(request, signed_in, persona, inbox, history, detail):
    pending = pending_request()
    client = signed_in(request.getfixturevalue(persona))
    assert client.get("/approvals/").status_code == inbox
    assert client.get("/approvals/history/").status_code == history
    assert client.get(f"/approvals/{pending.pk}/").status_code == detail


def test_signed_out_visitors_are_sent_to_the_login_page(client):
    pending = pending_request()
    for url in ("/approvals/", "/approvals/history/", f"/approvals/{pending.pk}/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    response = client.post(f"/approvals/{pending.pk}/decision/", {"decision": "approve"})
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.get("/approvals/count/").status_code == 204  # the polled count swaps nothing in


def test_those_who_cannot_decide_get_no_forms_and_their_posts_are_refused(signed_in, auditor, outsider):
    pending = pending_request()
    page = html_of(signed_in(auditor).get(f"/approvals/{pending.pk}/"))
    assert "crm.update_case" in page and "approve-form" not in page and "reject-form" not in page
    for user in (auditor, outsider):
        response = signed_in(user).post(f"/approvals/{pending.pk}/decision/", {"decision": "approve"})
        assert response.status_code == 403
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.PENDING and not ApprovalDecision.objects.exists()


def test_a_reviewer_never_sees_the_requests_of_their_own_runs(signed_in, reviewer):
    own = pending_request(requested_by=reviewer)
    client = signed_in(reviewer)
    assert f"#{own.pk} " not in html_of(client.get("/approvals/"))
    assert client.get(f"/approvals/{own.pk}/").status_code == 404
    assert client.post(f"/approvals/{own.pk}/decision/", {"decision": "approve"}).status_code == 404


def test_an_admin_who_requested_the_run_is_refused_by_policy_with_the_reason(parked, signed_in, requester):
    requester.groups.add(Group.objects.get(name=ADMIN))
    pending = parked()
    client = signed_in(requester)
    page = html_of(client.get(f"/approvals/{pending.pk}/"))
    assert "separation of duties keeps you from deciding it" in page

    response = client.post(f"/approvals/{pending.pk}/decision/", {"decision": "approve", "reason": "mine"})

    assert response.status_code == 403
    assert "requester cannot approve their own request" in html_of(response)
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.PENDING
    assert AuditEvent.objects.filter(action="approval.refused").count() == 1


def test_requests_above_the_reviewers_clearance_are_hidden(signed_in, reviewer):
    secret = pending_request(sensitivity="confidential")
    client = signed_in(reviewer)
    assert f"#{secret.pk} " not in html_of(client.get("/approvals/"))
    assert client.get(f"/approvals/{secret.pk}/").status_code == 404


def test_a_change_of_groups_or_clearance_shows_in_the_next_inbox(signed_in, client_for, reviewer):
    secret = pending_request(sensitivity="confidential")
    stewards = pending_request(approvers=["stewards"])
    PendingAction.objects.filter(pk=stewards.pk).update(approver_group="stewards")
    browser = signed_in(reviewer)

    def listed() -> set[int]:
        page = html_of(browser.get("/approvals/"))
        rows = client_for(reviewer, ("approvals:read",)).get("/api/v1/approvals?status=pending").json()
        shown = {pk for pk in (secret.pk, stewards.pk) if f'data-approval-id="{pk}"' in page}
        assert shown == {row["id"] for row in rows["results"]}
        return shown

    assert listed() == set()
    clear(reviewer, "confidential")
    assert listed() == {secret.pk}
    group = Group.objects.create(name="stewards")
    reviewer.groups.add(group)
    assert listed() == {secret.pk, stewards.pk}
    clear(reviewer, "internal")
    reviewer.groups.remove(group)
    assert listed() == set()


# --- The inbox ---------------------------------------------------------------------------------


def test_the_inbox_lists_a_parked_run_with_its_action_risk_and_due_time(parked, signed_in, reviewer):
    pending = parked()
    page = html_of(signed_in(reviewer).get("/approvals/"))
    assert f'data-approval-id="{pending.pk}"' in page
    assert "<code>crm.update_case</code>" in page and 'class="risk risk-high"' in page
    assert "CASE-1001" in page and "requester" in page and "in 23\xa0hours" in page
    assert "by requester, <time" in page and ">just now</time>" in page
    assert 'hx-get="/approvals/" hx-trigger="every 10s"' in page  # new requests appear by themselves
    assert 'src="/static/js/approvals.js"' in page
    assert '<span id="approval-count" class="status status-waiting_approval"' in page  # the nav count


def test_the_inbox_filters_and_sorts(signed_in, reviewer):
    low = pending_request(risk={}, approvers=["reviewer"], proposed_action={"handoff": "triage"})
    medium_public = pending_request(risk={"conditions": ["confidence < 0.85"]}, sensitivity="public")
    high_soon = pending_request(due_in=timedelta(hours=1))
    old = pending_request()
    PendingAction.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    PendingAction.objects.filter(pk=low.pk).update(workflow="other_workflow")
    client = signed_in(reviewer)

    def listed(query: str) -> list[int]:
        page = html_of(client.get(f"/approvals/?{query}"))
        return [
            pk
            for pk in (low.pk, medium_public.pk, high_soon.pk, old.pk)
            if f'data-approval-id="{pk}"' in page
        ]

    assert listed("risk=high") == [high_soon.pk, old.pk]
    assert listed("risk=low") == [low.pk]
    assert listed("sensitivity=public") == [medium_public.pk]
    assert listed("workflow=other_workflow") == [low.pk]
    assert listed("waiting=gt_day") == [old.pk]
    assert listed("waiting=lt_hour") == [low.pk, medium_public.pk, high_soon.pk]
    assert sorted(listed("risk=nonsense&waiting=forever")) == sorted(
        [low.pk, medium_public.pk, high_soon.pk, old.pk]
    )

    def order(query: str) -> list[int]:
        page = html_of(client.get(f"/approvals/?{query}"))
        return sorted(
            (low.pk, medium_public.pk, high_soon.pk, old.pk),
            key=lambda pk: page.index(f'data-approval-id="{pk}"'),
        )

    assert order("sort=due")[0] == high_soon.pk  # soonest due first (the default)
    assert order("sort=risk")[:2] == [high_soon.pk, old.pk] and order("sort=risk")[-1] == low.pk
    assert "No pending request matches these filters." in html_of(client.get("/approvals/?workflow=none"))


def test_the_rows_refresh_as_a_fragment_at_the_filtered_address(signed_in, reviewer):
    pending_request()
    fragment = html_of(signed_in(reviewer).get("/approvals/?risk=high&sort=risk", HTTP_HX_REQUEST="true"))
    assert "<html" not in fragment
    assert (
        'id="approval-rows" hx-get="/approvals/?risk=high&amp;sort=risk" hx-trigger="every 10s"' in fragment
    )


def test_the_inbox_and_the_nav_count_keep_their_query_count(signed_in, reviewer):
    client = signed_in(reviewer)
    for _ in range(3):
        pending_request()
    client.get("/approvals/")  # the workflows to filter on are read once a minute, not per page
    with CaptureQueriesContext(connection) as few:
        assert client.get("/approvals/?sort=risk").status_code == 200
    with CaptureQueriesContext(connection) as few_counts:
        assert html_of(client.get("/approvals/count/")).strip().endswith(">3</span>")
    with CaptureQueriesContext(connection) as few_rows:
        client.get("/approvals/", HTTP_HX_REQUEST="true")
    for _ in range(27):
        pending_request()
    with CaptureQueriesContext(connection) as many:
        page = html_of(client.get("/approvals/?sort=risk"))
    with CaptureQueriesContext(connection) as many_counts:
        assert html_of(client.get("/approvals/count/")).strip().endswith(">30</span>")
    with CaptureQueriesContext(connection) as many_rows:
        client.get("/approvals/", HTTP_HX_REQUEST="true")
    assert page.count('class="approval-row"') == 25  # one page; the navigation shows the total
    assert (len(many), len(many_counts), len(many_rows)) == (len(few), len(few_counts), len(few_rows))
    # Session, user, the reviewer's groups and clearance (which hold the roles too), the rows (on
    # the whole page, with the navigation count); the polled count asks the roles afresh.
    assert (len(few), len(few_counts), len(few_rows)) == (4, 4, 4)


def test_the_nav_count_is_read_with_the_rows_or_on_its_own_when_no_row_matches(signed_in, reviewer):
    for _ in range(3):
        pending_request()
    client = signed_in(reviewer)
    client.get("/approvals/")  # the workflows to filter on are read once a minute, not per page
    with CaptureQueriesContext(connection) as with_rows:
        page = html_of(client.get("/approvals/"))
    with CaptureQueriesContext(connection) as without_rows:
        empty = html_of(client.get("/approvals/?workflow=none"))
    assert page.count('class="approval-row"') == 3 and empty.count('class="approval-row"') == 0
    assert 'title="3 pending approval requests"' in page and 'title="3 pending approval requests"' in empty
    assert (len(with_rows), len(without_rows)) == (4, 5)


def test_the_nav_count_stops_counting_at_its_cap(signed_in, reviewer, monkeypatch):
    from approvals import selectors

    monkeypatch.setattr(selectors, "PENDING_COUNT_CAP", 2)
    client = signed_in(reviewer)
    for _ in range(2):
        pending_request()
    assert html_of(client.get("/approvals/count/")).strip().endswith(">2</span>")
    pending_request()
    count = html_of(client.get("/approvals/count/"))
    assert count.strip().endswith(">2+</span>") and 'title="2+ pending approval requests"' in count
    assert ">2+</span>" in html_of(client.get("/approvals/"))


def test_the_nav_shows_the_live_count_to_deciders_and_the_history_to_auditors(signed_in, reviewer, auditor):
    pending_request()
    page = html_of(signed_in(reviewer).get("/runs/"))
    assert 'href="/approvals/"' in page and 'hx-get="/approvals/count/" hx-trigger="every 10s"' in page
    auditor_page = html_of(signed_in(auditor).get("/runs/"))
    assert 'href="/approvals/history/"' in auditor_page and "approval-count" not in auditor_page


def test_the_workflow_filter_offers_the_released_workflows_read_at_most_once_a_minute(
    signed_in, reviewer, demo_registry, monkeypatch
):
    from approvals import selectors

    client = signed_in(reviewer)
    assert '<option value="support_case_resolution">' in html_of(client.get("/approvals/"))
    read_at, _ = selectors._workflows_read
    monkeypatch.setattr(selectors, "_workflows_read", (read_at, ["remembered", HOSTILE]))
    page = html_of(client.get("/approvals/?workflow=remembered"))
    assert '<option value="remembered" selected>remembered</option>' in page
    assert f'<option value="{escape(HOSTILE)}">{escape(HOSTILE)}</option>' in page and "<img" not in page
    assert "support_case_resolution</option>" not in page
    monkeypatch.setattr(selectors, "_workflows_read", (read_at - selectors.WORKFLOWS_FRESH_SECONDS - 1, []))
    assert '<option value="support_case_resolution">' in html_of(client.get("/approvals/"))


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_a_rows_waiting_and_due_times_read_as_djangos_timesince(zone):
    from django.utils.timesince import timesince

    from approvals.views import _time_between

    spans = [-5, 0, 1, 59, 60, 61, 1439, 1440, 10_079, 10_080, 40_319, 40_320, 40_321, 90_000]
    # Each start is the day before a change to or from summer time in Paris.
    for start in (datetime(2026, 3, 28, 12, 0, 30, 5), datetime(2026, 10, 24, 12, 59)):
        start = start.replace(tzinfo=ZoneInfo(zone))
        for minutes in spans:
            for seconds in (0, 59.5):
                end = (start + timedelta(minutes=minutes, seconds=seconds)).astimezone(UTC)
                assert _time_between(start, end) == timesince(start, end), (start, minutes, seconds)


def test_a_request_under_a_minute_old_or_from_due_says_so_in_words():
    from approvals.views import _due_in, _waited

    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    assert _waited(now - timedelta(seconds=59), now) == "just now"
    assert _waited(now - timedelta(minutes=2), now) == "2\xa0minutes ago"
    assert _due_in(now, now + timedelta(seconds=59)) == "in under a minute"
    assert _due_in(now, now + timedelta(minutes=5)) == "in 5\xa0minutes"


def test_every_text_of_an_inbox_row_is_escaped(signed_in, reviewer):
    group = Group.objects.create(name=f"team{HOSTILE}")
    reviewer.groups.add(group)
    requester = UserFactory(username=f"someone{SCRIPT}")
    pending = pending_request(requested_by=requester, proposed_action={"gate": SCRIPT})
    PendingAction.objects.filter(pk=pending.pk).update(
        workflow=f"flow{SCRIPT}", state=f"state{HOSTILE}", approver_group=group.name
    )
    Run.objects.filter(pk=pending.run_id).update(case_id=f"case{HOSTILE}")

    page = html_of(signed_in(reviewer).get("/approvals/"))

    assert f'data-approval-id="{pending.pk}"' in page
    assert "<script>steal()" not in page and "<img src=x" not in page
    for text in (f"flow{SCRIPT}", f"state{HOSTILE}", f"team{HOSTILE}", f"case{HOSTILE}", f"someone{SCRIPT}"):
        assert escape(text) in page
    assert f"gate <code>{escape(SCRIPT)}</code>" in page


# --- The detail panel --------------------------------------------------------------------------


def test_the_detail_panel_shows_input_steps_reasons_action_and_decisions(parked, signed_in, reviewer):
    pending = parked(LARGE_REFUND)  # the gate first: refund_amount > 500
    client = signed_in(reviewer)

    panel = html_of(client.get(f"/approvals/{pending.pk}/", HTTP_HX_REQUEST="true"))

    assert "<html" not in panel and f'data-approval-id="{pending.pk}"' in panel
    assert "refund_amount &gt; 500" in panel  # why it stopped
    assert escape("$750") in panel  # the original input
    for state in ("triage", "retrieve", "draft", "validate"):
        assert f"<strong>{state}</strong>" in panel  # what the agent did
    assert escape('"refund_amount": 750') in panel  # the facts the gate proposes to pass
    assert "quorum 1, 0 approvals so far" in panel and "None yet." in panel
    assert 'class="approve-form"' in panel and 'name="csrfmiddlewaretoken"' in panel

    whole = html_of(client.get(f"/approvals/{pending.pk}/"))
    assert "<html" in whole and f'action="/approvals/{pending.pk}/decision/"' in whole


def test_tool_arguments_and_model_outputs_are_rendered_inert(signed_in, reviewer):
    pending = pending_request(
        input={"text": HOSTILE},
        reasons=[f"because {HOSTILE}"],
        proposed_action={"tool": f"crm.{SCRIPT}", "args": {"resolution": SCRIPT, "note": HOSTILE}},
    )
    StepCheckpoint.objects.create(
        run=pending.run,
        sequence=1,
        state="draft",
        started_at=timezone.now(),
        output={"reply": f"{SCRIPT}{HOSTILE}"},
        details={"kind": "model", "agent": f"writer{HOSTILE}"},
    )
    client = signed_in(reviewer)
    for page in (
        html_of(client.get(f"/approvals/{pending.pk}/")),
        html_of(client.get("/approvals/")),
    ):
        assert "<script>steal()" not in page and "<img src=x" not in page
        assert "&lt;script&gt;steal()&lt;/script&gt;" in page
    detail = html_of(client.get(f"/approvals/{pending.pk}/"))
    assert escape(HOSTILE) in detail and "because &lt;img" in detail and "writer&lt;img" in detail


def test_the_panel_says_on_which_day_and_in_which_zone_each_step_finished(signed_in, reviewer):
    """A request may wait days: a bare time of day would not say when the agent worked."""
    pending = pending_request()
    two_days_ago = timezone.now() - timedelta(days=2)
    StepCheckpoint.objects.create(
        run=pending.run, sequence=1, state="draft", started_at=two_days_ago, output={"reply": "ok"}
    )
    StepCheckpoint.objects.filter(run=pending.run).update(finished_at=two_days_ago)
    panel = html_of(signed_in(reviewer).get(f"/approvals/{pending.pk}/", HTTP_HX_REQUEST="true"))
    assert f"{timezone.localtime(two_days_ago):%Y-%m-%d %H:%M:%S} UTC</time>" in panel


# --- Deciding without JavaScript ----------------------------------------------------------------


def test_approving_with_a_plain_form_resumes_the_run_and_lands_in_the_history(parked, signed_in, reviewer):
    pending = parked()
    client = signed_in(reviewer)

    response = client.post(
        f"/approvals/{pending.pk}/decision/",
        {"decision": "approve", "reason": "refund matches the order", "next": "/approvals/?sort=risk"},
    )

    assert response.status_code == 302 and response["Location"] == "/approvals/?sort=risk"
    inbox = html_of(client.get(response["Location"]))
    assert f"Approved request #{pending.pk} (support_case_resolution, commit): the run resumes." in inbox
    assert f'data-approval-id="{pending.pk}"' not in inbox
    pending.refresh_from_db()
    assert pending.status == PendingAction.Status.APPROVED
    assert Run.objects.get(pk=pending.run_id).status == Run.Status.QUEUED
    decision = ApprovalDecision.objects.get()
    assert (decision.reviewer, decision.reason) == (reviewer, "refund matches the order")

    history = html_of(client.get("/approvals/history/"))
    assert f"#{pending.pk} support_case_resolution" in history and "reviewer: approve" in history
    detail = html_of(client.get(f"/approvals/{pending.pk}/"))
    assert "approve-form" not in detail and "refund matches the order" in detail
    assert 'hx-trigger="every 2s"' in detail  # follows the run until it ends


def test_a_decision_takes_few_queries(parked, signed_in, reviewer):
    pending = parked()
    client = signed_in(reviewer)
    with CaptureQueriesContext(connection) as queries:
        response = client.post(f"/approvals/{pending.pk}/decision/", {"decision": "approve"})
    assert response.status_code == 302
    # Session, user, the reviewer's groups and clearance; in the transaction (a savepoint
    # here): the lock (which also brings the run and asks whether this reviewer decided
    # already), then on PostgreSQL one statement for all the approval writes; elsewhere the
    # policy decision, the approval, the request's new status, the run's resumption and one
    # append of the decision's events, the ledger head read first.
    assert len(queries) == (7 if connection.vendor == "postgresql" else 12), [q["sql"][:60] for q in queries]


def test_the_redirect_after_a_decision_never_leaves_the_inbox(parked, signed_in, reviewer):
    pending = parked()
    response = signed_in(reviewer).post(
        f"/approvals/{pending.pk}/decision/",
        {"decision": "approve", "next": "https://evil.example/approvals/"},
    )
    assert response["Location"] == "/approvals/"


def test_rejecting_needs_a_reason_and_then_follows_the_rejection_path(parked, signed_in, reviewer):
    pending = parked()
    client = signed_in(reviewer)

    refused = client.post(f"/approvals/{pending.pk}/decision/", {"decision": "reject", "reason": "  "})

    assert refused.status_code == 422
    assert "A rejection needs a reason." in html_of(refused) and "Required when rejecting." in html_of(
        refused
    )
    assert not ApprovalDecision.objects.exists()

    response = client.post(
        f"/approvals/{pending.pk}/decision/", {"decision": "reject", "reason": "wrong order"}
    )
    assert response.status_code == 302
    assert "Rejected request" in html_of(client.get(response["Location"]))
    assert Run.objects.get(pk=pending.run_id).status == Run.Status.REJECTED


def test_bad_input_gets_readable_messages_never_a_500(parked, signed_in, reviewer):
    pending = parked()
    client = signed_in(reviewer)
    unknown = client.post(f"/approvals/{pending.pk}/decision/", {"decision": "maybe"})
    assert unknown.status_code == 422 and "Select a valid choice" in html_of(unknown)
    too_long = client.post(
        f"/approvals/{pending.pk}/decision/", {"decision": "approve", "reason": "x" * 2001}
    )
    assert too_long.status_code == 422 and "at most 2000 characters" in html_of(too_long)
    assert client.post("/approvals/999999/decision/", {"decision": "approve"}).status_code == 404
    assert client.get("/approvals/999999/").status_code == 404
    assert client.get(f"/approvals/{pending.pk}/decision/").status_code == 405
    assert not ApprovalDecision.objects.exists()


def test_a_second_decision_gets_a_clear_conflict(parked, signed_in, reviewer, reviewer2):
    pending = parked()
    assert (
        signed_in(reviewer).post(f"/approvals/{pending.pk}/decision/", {"decision": "approve"}).status_code
        == 302
    )
    late = signed_in(reviewer2).post(f"/approvals/{pending.pk}/decision/", {"decision": "approve"})
    assert late.status_code == 409
    assert "This request was already approved; your decision was not recorded." in html_of(late)
    assert ApprovalDecision.objects.count() == 1


def test_the_form_needs_the_csrf_token(parked, reviewer):
    pending = parked()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(reviewer)
    assert browser.post(f"/approvals/{pending.pk}/decision/", {"decision": "approve"}).status_code == 403
    assert not ApprovalDecision.objects.exists()


def test_with_htmx_a_decision_redirects_and_a_refusal_replaces_the_panel(parked, signed_in, reviewer):
    pending = parked()
    client = signed_in(reviewer)
    refused = client.post(
        f"/approvals/{pending.pk}/decision/", {"decision": "reject", "reason": ""}, HTTP_HX_REQUEST="true"
    )
    assert refused.status_code == 422
    assert "<html" not in html_of(refused) and "A rejection needs a reason." in html_of(refused)
    approved = client.post(
        f"/approvals/{pending.pk}/decision/", {"decision": "approve"}, HTTP_HX_REQUEST="true"
    )
    assert approved.status_code == 200 and approved["HX-Redirect"] == "/approvals/"


def test_a_quorum_request_says_how_many_approvals_it_still_needs(signed_in, reviewer, reviewer2):
    pending = pending_request(quorum=2)
    client = signed_in(reviewer)
    response = client.post(f"/approvals/{pending.pk}/decision/", {"decision": "approve"})
    assert response.status_code == 302
    assert "is recorded (1 of 2); it now waits for the reviewer group." in html_of(client.get("/approvals/"))
    assert "quorum 2, 1 approval so far" in html_of(signed_in(reviewer2).get(f"/approvals/{pending.pk}/"))


# --- History -----------------------------------------------------------------------------------


def test_the_history_filters_by_status_workflow_reviewer_and_date(signed_in, reviewer, reviewer2, auditor):
    approved, rejected = pending_request(), pending_request()
    signed_in(reviewer).post(f"/approvals/{approved.pk}/decision/", {"decision": "approve"})
    signed_in(reviewer2).post(f"/approvals/{rejected.pk}/decision/", {"decision": "reject", "reason": "no"})
    still_pending = pending_request()
    client = signed_in(auditor)

    def listed(query: str) -> set[int]:
        page = html_of(client.get(f"/approvals/history/?{query}"))
        return {
            pk for pk in (approved.pk, rejected.pk, still_pending.pk) if f'href="/approvals/{pk}/"' in page
        }

    today = timezone.now().date()
    assert listed("") == {approved.pk, rejected.pk}
    assert listed("status=rejected") == {rejected.pk}
    assert listed("reviewer=reviewer") == {approved.pk}
    assert listed("workflow=builtin.intake") == {approved.pk, rejected.pk}
    assert listed("workflow=other") == set()
    assert listed(f"decided_from={today}&decided_to={today}") == {approved.pk, rejected.pk}
    assert listed(f"decided_from={today + timedelta(days=1)}") == set()
    assert listed(f"decided_from={today}&decided_to=9999-12-31") == {approved.pk, rejected.pk}
    assert listed("decided_from=not-a-date&status=nonsense") == {approved.pk, rejected.pk}


def test_the_history_keeps_its_query_count(signed_in, auditor, reviewer):
    client = signed_in(auditor)
    first = pending_request()
    signed_in(reviewer).post(f"/approvals/{first.pk}/decision/", {"decision": "approve"})
    with CaptureQueriesContext(connection) as few:
        assert client.get("/approvals/history/").status_code == 200
    for _ in range(10):
        more = pending_request()
        ApprovalDecision.objects.create(
            pending_action=more,
            reviewer=reviewer,
            decision="approve",
            approver_group="reviewer",
            action_hash="a",
        )
        PendingAction.objects.filter(pk=more.pk).update(status=PendingAction.Status.APPROVED)
    with CaptureQueriesContext(connection) as many:
        page = html_of(client.get("/approvals/history/"))
    assert page.count("reviewer: approve") == 11
    assert len(many) == len(few)


def test_reviewers_see_in_the_history_only_their_groups_requests(signed_in, reviewer):
    platform_only = pending_request(approvers=["platform"])
    PendingAction.objects.filter(pk=platform_only.pk).update(status=PendingAction.Status.EXPIRED)
    mine = pending_request()
    PendingAction.objects.filter(pk=mine.pk).update(status=PendingAction.Status.EXPIRED)
    page = html_of(signed_in(reviewer).get("/approvals/history/"))
    assert f'href="/approvals/{mine.pk}/"' in page and f'href="/approvals/{platform_only.pk}/"' not in page


def test_the_inbox_pages_without_counting_and_ignores_a_bad_page_number(signed_in, reviewer):
    requests = [pending_request(due_in=timedelta(hours=n + 1)) for n in range(27)]
    client = signed_in(reviewer)
    first = html_of(client.get("/approvals/?sort=due"))
    assert first.count('class="approval-row"') == 25 and 'href="?sort=due&amp;page=2">Next</a>' in first
    assert "Previous" not in first
    second = html_of(client.get("/approvals/?sort=due&page=2"))
    assert [f'data-approval-id="{r.pk}"' in second for r in requests[-3:]] == [False, True, True]
    assert 'href="?sort=due&amp;page=1">Previous</a>' in second and "Next</a>" not in second
    for page in ("0", "-3", "abc", "9" * 40):
        assert client.get(f"/approvals/?page={page}").status_code == 200


def test_an_agent_identity_sees_no_request_and_decides_nothing(signed_in):
    pending = pending_request()
    agent = UserFactory(username="agent.case_manager", roles=[AGENT, REVIEWER])
    client = signed_in(agent)
    assert f'data-approval-id="{pending.pk}"' not in html_of(client.get("/approvals/"))
    assert client.get(f"/approvals/{pending.pk}/").status_code == 404
    assert client.post(f"/approvals/{pending.pk}/decision/", {"decision": "approve"}).status_code == 404
    assert not ApprovalDecision.objects.exists()
