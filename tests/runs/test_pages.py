from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.html import escape

from controlplane.audit import record
from controlplane.identity import actor_for
from controlplane.models import AuditEvent
from runs import services
from runs.models import Effect, PendingAction, Run, StepCheckpoint
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db


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


# --- Runs list, run page, dead-letter queue and operator actions -------------------------------

HOSTILE = '<img src=x onerror="alert(1)">'


def _events(run, action):
    return AuditEvent.objects.filter(run_id=str(run.pk), action=action)


def _dead_letter(**fields):
    return RunFactory(
        status="dead_lettered",
        current_state="retrieve",
        error="kb.search timed out after 3 attempts",
        **fields,
    )


def test_run_list_shows_release_and_channel_and_filters_by_release(signed_in, platform_user):
    client = signed_in(platform_user)
    RunFactory(release_id="rel_alpha01", channel="staging", case_id="ALPHA-CASE")
    RunFactory(release_id="rel_beta02", channel="production", case_id="BETA-CASE")
    RunFactory(case_id="BUILTIN-CASE")

    everything = client.get("/runs/").content.decode()
    assert 'href="/registry/releases/rel_alpha01/"' in everything and "production" in everything
    assert 'href="/runs/dead-letters/"' in everything  # the tabs

    alpha = client.get("/runs/?release=alpha").content.decode()
    assert "ALPHA-CASE" in alpha and "BETA-CASE" not in alpha and "BUILTIN-CASE" not in alpha


def test_run_list_filters_by_age(signed_in, platform_user):
    client = signed_in(platform_user)
    RunFactory(case_id="FRESH-CASE")
    two_days_old = RunFactory(case_id="OLD-CASE")
    Run.objects.filter(pk=two_days_old.pk).update(created_at=timezone.now() - timedelta(days=2))

    last_day = client.get("/runs/?age=day").content.decode()
    assert "FRESH-CASE" in last_day and "OLD-CASE" not in last_day
    last_hour = client.get("/runs/?age=hour").content.decode()
    assert "FRESH-CASE" in last_hour and "OLD-CASE" not in last_hour
    last_week = client.get("/runs/?age=week").content.decode()
    assert "FRESH-CASE" in last_week and "OLD-CASE" in last_week
    assert "OLD-CASE" in client.get("/runs/?age=nonsense").content.decode()


def test_run_rows_refresh_at_the_filtered_address(signed_in, platform_user):
    RunFactory(release_id="rel_alpha01")
    fragment = (
        signed_in(platform_user)
        .get("/runs/?release=rel_alpha01&age=week", HTTP_HX_REQUEST="true")
        .content.decode()
    )
    assert "<html" not in fragment
    assert 'id="run-rows" hx-get="/runs/?release=rel_alpha01&amp;age=week" hx-trigger="every 3s"' in fragment


def test_run_list_pages_keep_the_filters(signed_in, platform_user):
    RunFactory.create_batch(51, release_id="rel_many")
    page = signed_in(platform_user).get("/runs/?release=rel_many").content.decode()
    assert 'href="/runs/?release=rel_many&amp;page=2"' in page


def test_run_list_query_count_does_not_grow_with_released_runs(signed_in, platform_user):
    client = signed_in(platform_user)
    RunFactory(release_id="rel_alpha01", channel="staging")
    with CaptureQueriesContext(connection) as few:
        assert client.get("/runs/?release=rel&age=day").status_code == 200
    RunFactory.create_batch(30, release_id="rel_alpha01", channel="staging")
    with CaptureQueriesContext(connection) as many:
        page = client.get("/runs/?release=rel&age=day")
    assert len(many) == len(few)
    assert page.content.decode().count('href="/registry/releases/rel_alpha01/"') == 31


def test_dead_letter_queue_lists_only_dead_letters_newest_first(signed_in, platform_user):
    client = signed_in(platform_user)
    older = _dead_letter(case_id="OLDER-DEAD")
    Run.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(hours=1))
    RunFactory(status="compensation_failed", case_id="HELD-COMP", error="crm.reopen_case failed")
    RunFactory(status="failed", case_id="PLAIN-FAILED")
    RunFactory(case_id="STILL-QUEUED")

    page = client.get("/runs/dead-letters/")

    html = page.content.decode()
    assert page.status_code == 200
    assert "HELD-COMP" in html and "OLDER-DEAD" in html
    assert "PLAIN-FAILED" not in html and "STILL-QUEUED" not in html
    assert html.index("HELD-COMP") < html.index("OLDER-DEAD")
    assert "kb.search timed out after 3 attempts" in html and "<code>retrieve</code>" in html
    assert f'href="/runs/{older.pk}/"' in html  # inspect
    assert f"/runs/dead-letters/{older.pk}/retry/" in html
    assert f"/runs/dead-letters/{older.pk}/discard/" in html
    assert 'aria-current="page">Dead letters' in html


def test_dead_letter_queue_keeps_its_query_count(signed_in, platform_user):
    client = signed_in(platform_user)
    _dead_letter()
    with CaptureQueriesContext(connection) as few:
        assert client.get("/runs/dead-letters/").status_code == 200
    for _ in range(20):
        _dead_letter()
    with CaptureQueriesContext(connection) as many:
        page = client.get("/runs/dead-letters/")
    assert len(many) == len(few)
    assert page.content.decode().count('action="/runs/dead-letters/') == 2 * 21  # retry and discard


def test_dead_letter_queue_shows_requesters_their_own_without_buttons(signed_in, requester):
    _dead_letter(requested_by=requester, case_id="MINE-DEAD")
    _dead_letter(case_id="SOMEONE-ELSES")
    html = signed_in(requester).get("/runs/dead-letters/").content.decode()
    assert "MINE-DEAD" in html and "SOMEONE-ELSES" not in html
    assert "/retry/" not in html and "/discard/" not in html


def _detailed_run(requester):
    """A run parked at a gate with a model step, a tool step with an effect, all with hostile text."""
    run = RunFactory(
        requested_by=requester,
        status="waiting_approval",
        current_state="commit",
        release_id="rel_gone",  # no such release: the page still renders, without a diagram
        channel="staging",
        hop_count=2,
        budget={"cost_usd": 1.0, "tool_calls": 20},
        spent={"cost_usd": 0.0042, "tool_calls": 1, "tokens": 321},
        deadline=timezone.now() + timedelta(hours=1),
        input={"text": HOSTILE},
    )
    now = timezone.now()
    StepCheckpoint.objects.create(
        run=run,
        sequence=1,
        state="draft",
        started_at=now,
        output={"reply": f"</pre><script>steal()</script>{HOSTILE}"},
        details={
            "kind": "model",
            "agent": "case_drafter",
            "config": "drafter-primary",
            "fallbacks": ["drafter-backup"],
            "tokens": 321,
            "cost_usd": 0.0042,
            "latency_ms": 87.5,
        },
    )
    StepCheckpoint.objects.create(
        run=run,
        sequence=2,
        state="notify",
        started_at=now,
        output={"sent": True},
        details={
            "kind": "tool",
            "tool": "mail.send",
            "idempotency_key": "idem-0123456789abcdef-rest",
            "policy_decision": 4242,
            "effect_id": "msg-77",
            "replayed": True,
            "reconciled": True,
        },
    )
    Effect.objects.create(
        run=run,
        state="notify",
        tool="mail.send",
        idempotency_key="idem-0123456789abcdef-rest",
        args={"to": "a@example.com"},
        status="committed",
        result={"sent": True},
        effect_id=f"msg-77{HOSTILE}",
        compensation_tool="mail.recall",
    )
    # Stored as it is: the approval request that creating one opens needs the release's policy.
    PendingAction.objects.bulk_create(
        [
            PendingAction(
                run=run,
                state="commit",
                reasons=[f"amount over 500 {HOSTILE}"],
                proposed_action={"tool": "crm.update_case", "args": {"note": f"<b>bold</b>{HOSTILE}"}},
                action_hash="a" * 64,
                approvers=["reviewer"],
                quorum=2,
                policy_decision_id=4343,
            )
        ]
    )
    return run


def test_run_page_shows_steps_pending_action_and_effects_escaped(signed_in, platform_user, requester):
    run = _detailed_run(requester)

    page = signed_in(platform_user).get(f"/runs/{run.pk}/")

    html = page.content.decode()
    assert page.status_code == 200
    # header facts
    assert 'href="/registry/releases/rel_gone/"' in html and "staging" in html
    assert "0.0042 of 1.0" in html and "321" in html and run.trace_id in html
    # the steps and their details
    assert "case_drafter" in html and "drafter-primary" in html and "drafter-backup" in html
    assert "87.5 ms" in html and "$0.0042" in html
    assert "mail.send" in html and "idem-0123456789" in html
    assert "status-replayed" in html and "status-reconciled" in html
    assert 'href="/policy/decisions/4242/"' in html and 'href="/policy/decisions/4343/"' in html
    assert "<details" in html
    # the pending action and the effects
    assert "Waiting for approval" in html and "crm.update_case" in html and "quorum 2" in html
    assert "mail.recall" in html and "Committed" in html
    # untrusted text is escaped everywhere
    assert HOSTILE not in html and "<script>steal()" not in html and "<b>bold</b>" not in html
    assert "&lt;img src=x onerror=" in html and "&lt;/pre&gt;&lt;script&gt;steal()" in html
    assert 'class="mermaid"' not in html  # no release to draw


def test_run_page_links_policy_decisions_only_for_operators(signed_in, requester):
    run = _detailed_run(requester)
    html = signed_in(requester).get(f"/runs/{run.pk}/").content.decode()
    assert "#4242" in html and "/policy/decisions/" not in html
    assert f"/runs/{run.pk}/cancel/" not in html  # and no operator buttons


def test_run_page_of_a_released_run_draws_its_workflow(signed_in, demo_registry, requester, reviewer):
    run = services.task_submit(
        requester=requester,
        actor=actor_for(requester),
        workflow="support_case_resolution",
        case_id="CASE-2001",
        input={"text": "Please refund order #123, I want my money back: a refund of $120"},
        channel="staging",
    ).run
    services.run_advance(run_id=str(run.pk), worker="test")
    run.refresh_from_db()
    assert run.status == Run.Status.WAITING_APPROVAL

    html = signed_in(requester).get(f"/runs/{run.pk}/").content.decode()

    assert '<pre class="mermaid"' in html and "stateDiagram-v2" in html
    assert "class s_triage,s_retrieve,s_draft,s_validate,s_approve visited" in html
    assert "mermaid.min.js" in html
    assert "Waiting for approval at <code>commit</code>" in html and "crm.update_case" in html
    assert html.count("<details") >= 5 and "triage" in html
    assert 'hx-trigger="every 2s"' in html


def test_platform_user_cancels_a_run_from_its_page(signed_in, platform_user, requester):
    run = _detailed_run(requester)
    client = signed_in(platform_user)
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert f'action="/runs/{run.pk}/cancel/"' in page
    assert 'id="run-actions-waiting_approval"' in page  # a typed reason survives the refreshes

    response = client.post(f"/runs/{run.pk}/cancel/", {"reason": "customer withdrew"}, HTTP_HX_REQUEST="true")

    assert response.status_code == 200 and response["HX-Redirect"] == f"/runs/{run.pk}/"
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    assert run.pending_actions.get().status == PendingAction.Status.SUPERSEDED
    event = _events(run, "run.cancelled").get()
    assert event.actor == "user:platform" and event.payload["reason"] == "customer withdrew"
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "is cancelled" in page and f"/runs/{run.pk}/cancel/" not in page


def test_cancelling_a_finished_run_is_explained(signed_in, platform_user):
    run = RunFactory(status="succeeded")
    response = signed_in(platform_user).post(f"/runs/{run.pk}/cancel/", {"reason": ""})
    assert response.status_code == 409
    assert "A succeeded run cannot be cancelled." in response.content.decode()
    assert not _events(run, "run.cancelled").exists()


def test_platform_user_retries_a_dead_letter_with_a_repaired_input(signed_in, platform_user):
    run = _dead_letter(input={"text": "garbled"})
    client = signed_in(platform_user)
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert f'action="/runs/{run.pk}/retry/"' in page and 'name="repaired_input"' in page

    response = client.post(
        f"/runs/{run.pk}/retry/", {"repaired_input": '{"text": "refund order #123"}', "reason": "fixed text"}
    )

    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    run.refresh_from_db()
    assert (run.status, run.input, run.error) == ("queued", {"text": "refund order #123"}, "")
    event = _events(run, "run.retried").get()
    assert event.payload["reason"] == "fixed text" and event.payload["from"] == "dead_lettered"
    assert event.payload["input_digest_before"] != event.payload["input_digest_after"]


def test_retry_without_a_repaired_input_keeps_the_input(signed_in, platform_user):
    run = RunFactory(status="failed", input={"text": "as it was"})
    response = signed_in(platform_user).post(f"/runs/{run.pk}/retry/", {"repaired_input": "  "})
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == "queued" and run.input == {"text": "as it was"}
    assert "input_digest_after" not in _events(run, "run.retried").get().payload


def test_retry_is_offered_only_for_failed_runs(signed_in, platform_user):
    client = signed_in(platform_user)
    queued = RunFactory()
    html = client.get(f"/runs/{queued.pk}/").content.decode()
    assert f"/runs/{queued.pk}/cancel/" in html and f"/runs/{queued.pk}/retry/" not in html
    held = RunFactory(status="compensation_failed")
    html = client.get(f"/runs/{held.pk}/").content.decode()
    assert f"/runs/{held.pk}/cancel/" in html and f"/runs/{held.pk}/retry/" in html
    assert 'hx-trigger="every 2s"' not in html  # nothing moves until an operator acts
    # Its retry undoes again, never goes forward: no input to repair.
    assert "Retry the compensation" in html and 'name="repaired_input"' not in html
    succeeded = RunFactory(status="succeeded")
    html = client.get(f"/runs/{succeeded.pk}/").content.decode()
    assert "/cancel/" not in html and "/retry/" not in html
    refused = client.post(f"/runs/{queued.pk}/retry/", {})
    assert refused.status_code == 409
    assert "Only dead-lettered or failed runs can be retried; this one is queued." in refused.content.decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"text": "unterminated', "This is not valid JSON"),
        ('["a", "list"]', "must be a JSON object"),
        ('{"amount": NaN}', "NaN is not a JSON value"),
        ('{"amount": 1e400}', "number 1e400 is too large to store"),
        ('{"amount": 9007199254740993}', "outside the interoperable range"),
        ('{"text": "\\ud800"}', "lone surrogate"),
        ('{"\\udfff": 1}', "lone surrogate"),
        ('{"text": "\\u0000"}', "NUL character"),
        ('{"amount": 1, "amount": 2}', "duplicate key"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_invalid_repaired_input_is_refused_and_changes_nothing(signed_in, platform_user, text, message):
    run = _dead_letter(input={"text": "original"})
    client = signed_in(platform_user)

    from_run_page = client.post(f"/runs/{run.pk}/retry/", {"repaired_input": text}, HTTP_HX_REQUEST="true")
    from_queue = client.post(f"/runs/dead-letters/{run.pk}/retry/", {"repaired_input": text})

    for response in (from_run_page, from_queue):
        html = response.content.decode()
        assert response.status_code == 422
        assert message in html and 'role="alert"' in html
        assert escape(text) in html  # what was typed is kept, to be corrected
    # The refused form replaces the one on the page (it is kept across refreshes otherwise).
    actions = from_run_page.content.decode().split('id="run-actions-dead_lettered"')[1].split(">")[0]
    assert "hx-preserve" not in actions
    run.refresh_from_db()
    assert (run.status, run.input) == ("dead_lettered", {"text": "original"})
    assert not _events(run, "run.retried").exists()


def test_dead_letter_queue_retries_and_discards(signed_in, admin_user):
    to_retry = _dead_letter()
    to_discard = RunFactory(status="compensation_failed")
    client = signed_in(admin_user)

    retried = client.post(f"/runs/dead-letters/{to_retry.pk}/retry/", {"repaired_input": '{"text": "ok"}'})
    discarded = client.post(f"/runs/dead-letters/{to_discard.pk}/discard/", {"reason": "handled by hand"})

    assert retried["Location"] == discarded["Location"] == "/runs/dead-letters/"
    to_retry.refresh_from_db()
    to_discard.refresh_from_db()
    assert (to_retry.status, to_retry.input) == ("queued", {"text": "ok"})
    assert to_discard.status == "cancelled"
    assert _events(to_retry, "run.retried").exists()
    assert _events(to_discard, "run.cancelled").get().payload == {
        "from": "compensation_failed",
        "reason": "handled by hand",
    }
    html = client.get("/runs/dead-letters/").content.decode()
    assert "The dead-letter queue is empty." in html

    again = client.post(f"/runs/dead-letters/{to_discard.pk}/discard/", {"reason": "twice"})
    assert again.status_code == 409 and "it is cancelled now" in again.content.decode()
    # A discard from a page opened before another operator's retry does not undo the retry.
    late = client.post(f"/runs/dead-letters/{to_retry.pk}/discard/", {"reason": "stale page"})
    assert (
        late.status_code == 409
        and "has left the dead-letter queue (it is queued now)" in late.content.decode()
    )
    to_retry.refresh_from_db()
    assert to_retry.status == "queued"


@pytest.mark.parametrize("who", ["reviewer", "requester", "auditor"])
def test_only_platform_and_admin_users_operate_runs(signed_in, request, who):
    user = request.getfixturevalue(who)
    waiting = RunFactory(requested_by=user, status="waiting_approval")
    dead = _dead_letter(requested_by=user, input={"text": "original"})
    client = signed_in(user)

    posts = [
        (f"/runs/{waiting.pk}/cancel/", {"reason": "no"}),
        (f"/runs/{dead.pk}/retry/", {"repaired_input": '{"text": "changed"}'}),
        (f"/runs/dead-letters/{dead.pk}/retry/", {}),
        (f"/runs/dead-letters/{dead.pk}/discard/", {}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url

    waiting.refresh_from_db()
    dead.refresh_from_db()
    assert waiting.status == "waiting_approval"
    assert (dead.status, dead.input) == ("dead_lettered", {"text": "original"})
    assert not AuditEvent.objects.filter(action__in=["run.cancelled", "run.retried"]).exists()
    assert "/cancel/" not in client.get(f"/runs/{waiting.pk}/").content.decode()


def test_run_operations_need_a_post(signed_in, platform_user):
    run = _dead_letter()
    assert signed_in(platform_user).get(f"/runs/{run.pk}/retry/").status_code == 405


def test_runs_filter_by_agent_for_the_agent_page(signed_in, platform_user, demo_registry, requester):
    run = services.task_submit(
        requester=requester,
        actor=actor_for(requester),
        workflow="support_case_resolution",
        case_id="CASE-1001",
        input={"text": "hello"},
        channel="staging",
    ).run
    client = signed_in(platform_user)
    rows = client.get("/runs/?agent=case_manager", HTTP_HX_REQUEST="true").content.decode()
    assert str(run.pk)[:8] in rows
    assert str(run.pk)[:8] not in client.get("/runs/?agent=nobody", HTTP_HX_REQUEST="true").content.decode()
    assert (
        'hx-get="/runs/?agent=case_manager"' in client.get("/registry/agents/case_manager/").content.decode()
    )
    nobodys = client.get("/runs/?agent=nobody", HTTP_HX_REQUEST="true").content.decode()
    assert "No run matches these filters." in nobodys


def test_the_agent_filter_shows_and_survives_the_other_filters(signed_in, platform_user):
    page = signed_in(platform_user).get("/runs/?agent=case_manager").content.decode()
    assert "Runs of releases that use agent <code>case_manager</code>" in page
    assert '<input type="hidden" name="agent" value="case_manager">' in page  # sent with every filter


def test_run_rows_shown_on_another_page_link_their_pages_to_the_run_list(
    signed_in, platform_user, demo_registry
):
    """The agent page loads its recent runs from the run list: their pager leads to that list."""
    RunFactory.create_batch(51, release_id=demo_registry.releases[0])
    rows = signed_in(platform_user).get("/runs/?agent=case_manager", HTTP_HX_REQUEST="true").content.decode()
    assert 'href="/runs/?agent=case_manager&amp;page=2">Next</a>' in rows


def test_times_on_a_run_page_name_their_day_and_zone(signed_in, requester):
    """A run may wait days for an approval: its steps and transitions say on which day, too."""
    run = RunFactory(requested_by=requester)
    event = record("system:worker", "run.started", run, {"state": "classify"}, run_id=run.pk)
    two_days_ago = timezone.now() - timedelta(days=2)
    StepCheckpoint.objects.create(
        run=run, sequence=1, state="classify", started_at=two_days_ago, output={"intent": "refund"}
    )
    StepCheckpoint.objects.filter(run=run).update(finished_at=two_days_ago)
    html = signed_in(requester).get(f"/runs/{run.pk}/").content.decode()
    assert f"{timezone.localtime(run.created_at):%Y-%m-%d %H:%M:%S} UTC" in html
    assert f"{timezone.localtime(event.created_at):%Y-%m-%d %H:%M:%S.%f} UTC</time>" in html
    assert f"{timezone.localtime(two_days_ago):%Y-%m-%d %H:%M:%S} UTC</time>" in html
