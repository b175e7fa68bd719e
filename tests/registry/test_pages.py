import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.identity import PLATFORM, actor_for
from controlplane.models import AuditEvent
from registry import selectors
from registry import workflow_definitions as wf
from registry.diagrams import mermaid_state_diagram
from registry.models import Agent, Artifact, Channel, ChannelChange, Release, ReleaseSignOff, Team
from registry.services import agents as agent_services
from registry.services.agents import agent_register, team_create
from registry.services.artifacts import artifact_publish
from registry.services.releases import release_create
from tests.factories import UserFactory
from tests.registry.conftest import SUPPORT_BUNDLE

pytestmark = pytest.mark.django_db

AGENT_FORM = {
    "slug": "refund_bot",
    "display_name": "Refund bot",
    "owner_team": "customer-support-ai",
    "purpose": "Proposes refunds.",
    "runbook_url": "https://runbooks.example.org/refund-bot",
    "slo_p95_latency_ms": "1200",
    "slo_success_rate": "0.97",
    "data_classification": "internal",
    "allowed_tools": "kb_search:read\ncrm.get_case:read",
}


@pytest.fixture
def release(demo_registry) -> Release:
    """The demo release, on staging, authored by the platform user."""
    return Release.objects.get(pk=demo_registry.releases[0])


def next_release(first: Release, author, template: str) -> Release:
    """A release of the same workflow whose only change is a new version of the triage prompt."""
    triage = Artifact.objects.filter(kind="prompt", name="triage").order_by("-version").first()
    artifact_publish(
        kind="prompt",
        name="triage",
        content={**triage.content, "template": template},
        author=author,
        actor=actor_for(author),
    )
    spec = {"workflow": first.workflow, "policy_bundle": "default", "agents": first.manifest["agents"]}
    return release_create(spec=spec, author=author, actor=actor_for(author)).release


def audit_count() -> int:
    return AuditEvent.objects.count()


def test_every_page_renders_for_a_reviewer(signed_in, reviewer, release):
    client = signed_in(reviewer)
    assert client.get("/registry/").url == "/registry/agents/"
    pages = {
        "/registry/agents/": "intake_classifier",
        "/registry/agents/case_manager/": "crm.update_case",
        "/registry/releases/": release.pk,
        f"/registry/releases/{release.pk}/": "stateDiagram-v2",
        f"/registry/releases/diff/?from={release.pk}&to={release.pk}": "unchanged",
        "/registry/artifacts/": "support_case_resolution",
        "/registry/artifacts/workflow/support_case_resolution/": "stateDiagram-v2",
        "/registry/artifacts/prompt/triage/": "Classify this customer message",
    }
    for url, expected in pages.items():
        page = client.get(url)
        html = page.content.decode()
        assert page.status_code == 200, url
        assert expected in html, url
        assert 'aria-current="page">Registry</a>' in html, url
        assert ("vendor/mermaid/mermaid.min.js" in html) == ("stateDiagram-v2" in html), url
    detail = client.get("/registry/agents/case_manager/").content.decode()
    assert "#support-ai-oncall" in detail and "agent.case_manager" in detail and 'href="/runs/"' in detail
    assert "Retire" not in detail and "Edit" not in detail  # a reviewer gets no write buttons


def test_platform_user_registers_edits_activates_and_retires_an_agent(signed_in, platform_user, release):
    client = signed_in(platform_user)
    assert client.get("/registry/new-agent/").status_code == 200

    registered = client.post("/registry/new-agent/", AGENT_FORM)
    assert registered.status_code == 302 and registered.url == "/registry/agents/refund_bot/"
    agent = Agent.objects.select_related("owner_team", "service_user").get(slug="refund_bot")
    assert (agent.status, agent.owner_team.slug, str(agent.slo_success_rate)) == (
        "draft",
        "customer-support-ai",
        "0.9700",
    )
    assert agent.allowed_tools == [
        {"tool": "kb_search", "scope": "read"},
        {"tool": "crm.get_case", "scope": "read"},
    ]
    assert agent.service_user.username == "agent.refund_bot"

    edit_page = client.get("/registry/agents/refund_bot/edit/").content.decode()
    assert "kb_search:read\ncrm.get_case:read" in edit_page and 'value="Refund bot"' in edit_page
    edited = client.post(
        "/registry/agents/refund_bot/edit/",
        {**AGENT_FORM, "display_name": "Refund proposer", "allowed_tools": "kb_search:read"},
    )
    assert edited.status_code == 302
    agent.refresh_from_db()
    assert (agent.display_name, agent.allowed_tools) == (
        "Refund proposer",
        [{"tool": "kb_search", "scope": "read"}],
    )

    assert client.post("/registry/agents/refund_bot/lifecycle/", {"to_status": "active"}).status_code == 302
    agent.refresh_from_db()
    assert agent.status == "active"

    retired = client.post(
        "/registry/agents/refund_bot/lifecycle/",
        {"to_status": "retired", "reason": "Replaced by a human queue."},
        follow=True,
    )
    agent.refresh_from_db()
    agent.service_user.refresh_from_db()
    assert (agent.status, agent.retirement_reason) == ("retired", "Replaced by a human queue.")
    assert not agent.service_user.is_active
    assert "Agent refund_bot is retired." in retired.content.decode()

    events = list(selectors.object_history(agent))
    assert [e.action for e in events] == [
        "agent.registered",
        "agent.updated",
        "agent.lifecycle",
        "agent.lifecycle",
    ]
    assert {e.actor for e in events} == {"user:platform"}
    assert events[1].payload["changes"]["display_name"] == {"from": "Refund bot", "to": "Refund proposer"}
    assert events[3].payload == {"from": "active", "to": "retired", "reason": "Replaced by a human queue."}
    history = client.get("/registry/agents/refund_bot/").content.decode()
    assert "Refund bot → Refund proposer" in history and "Replaced by a human queue." in history


def test_form_errors_show_next_to_the_fields(signed_in, platform_user, release):
    client = signed_in(platform_user)
    page = client.post(
        "/registry/new-agent/",
        {**AGENT_FORM, "slug": "Bad Slug", "slo_success_rate": "1.5", "allowed_tools": "kb_search"},
    )
    html = page.content.decode()
    assert page.status_code == 422
    assert (
        "Use lower-case letters" in html
        and "less than or equal to 1" in html
        and "write tool_name:scope" in html
    )

    unknown_tool = client.post(
        "/registry/new-agent/", {**AGENT_FORM, "allowed_tools": "crm.delete_everything:read"}
    )
    assert unknown_tool.status_code == 422
    assert "Unknown tool(s): crm.delete_everything" in unknown_tool.content.decode()

    too_slow = client.post(
        "/registry/new-agent/", {**AGENT_FORM, "slo_p95_latency_ms": "99999999999999999999"}
    )
    assert too_slow.status_code == 422
    assert "less than or equal to 2147483647" in too_slow.content.decode()

    taken = client.post("/registry/new-agent/", {**AGENT_FORM, "slug": "case_manager"})
    assert taken.status_code == 409 and "already exists" in taken.content.decode()
    assert not Agent.objects.filter(slug__in=["refund_bot", "Bad Slug"]).exists()


def test_activation_names_what_is_missing(signed_in, platform_user, release):
    client = signed_in(platform_user)
    client.post(
        "/registry/new-agent/",
        {"slug": "sketch", "display_name": "Sketch", "data_classification": "internal"},
    )
    page = client.post("/registry/agents/sketch/lifecycle/", {"to_status": "active"})
    assert page.status_code == 422
    assert "cannot be active without an owner team, a runbook and SLOs" in page.content.decode()
    assert Agent.objects.get(slug="sketch").status == "draft"


def test_retiring_without_a_reason_changes_nothing(signed_in, platform_user, release):
    client = signed_in(platform_user)
    before = audit_count()
    page = client.post("/registry/agents/case_manager/lifecycle/", {"to_status": "retired", "reason": "  "})
    html = page.content.decode()
    assert page.status_code == 422
    assert "Retiring an agent needs a reason." in html and "This field is required." in html
    assert Agent.objects.get(slug="case_manager").status == "active"
    assert audit_count() == before


def test_a_reviewer_cannot_change_anything(signed_in, reviewer, release):
    client = signed_in(reviewer)
    before = audit_count()
    writes = {
        "/registry/new-agent/": AGENT_FORM,
        "/registry/agents/case_manager/edit/": {**AGENT_FORM, "display_name": "Hijacked"},
        "/registry/agents/case_manager/lifecycle/": {"to_status": "retired", "reason": "because"},
        f"/registry/releases/{release.pk}/sign-off/": {"comment": "fine"},
        f"/registry/releases/{release.pk}/promote/": {"channel": "staging", "mode": "shadow"},
        f"/registry/releases/{release.pk}/channels/staging/rollback/": {"reason": "x"},
    }
    for url, data in writes.items():
        assert client.post(url, data).status_code == 403, url
    assert client.get("/registry/new-agent/").status_code == 403
    assert client.get("/registry/agents/case_manager/edit/").status_code == 403
    case_manager = Agent.objects.get(slug="case_manager")
    assert (case_manager.display_name, case_manager.status) == ("Case manager", "active")
    assert not Agent.objects.filter(slug="refund_bot").exists() and not ReleaseSignOff.objects.exists()
    assert Channel.objects.get(name="staging").mode == "full"
    assert audit_count() == before


def test_promote_to_staging_then_roll_back(signed_in, platform_user, release):
    client = signed_in(platform_user)
    newer = next_release(
        release, platform_user, "Sort this message into refund, incident or question: {{ text }}"
    )

    promoted = client.post(
        f"/registry/releases/{newer.pk}/promote/",
        {"channel": "staging", "mode": "full", "reason": "new triage prompt"},
    )
    assert promoted.status_code == 302 and promoted.url == f"/registry/releases/{newer.pk}/"
    staging = Channel.objects.get(workflow=release.workflow, name="staging")
    assert (staging.release_id, staging.baseline_id) == (newer.pk, release.pk)
    page = client.get(f"/registry/releases/{newer.pk}/").content.decode()
    assert f"/registry/releases/{newer.pk}/channels/staging/rollback/" in page and "hx-confirm" in page

    rolled_back = client.post(
        f"/registry/releases/{newer.pk}/channels/staging/rollback/", {"reason": "bad replies"}
    )
    assert rolled_back.status_code == 302
    staging.refresh_from_db()
    assert (staging.release_id, staging.baseline_id, staging.mode) == (release.pk, None, "full")
    last = ChannelChange.objects.filter(channel=staging).first()
    assert (last.action, last.reason, last.actor) == ("rollback", "bad replies", "user:platform")
    assert AuditEvent.objects.filter(action="channel.rolled_back", object_id=str(staging.pk)).count() == 1

    # A second click (or a tab opened before the rollback) is told why nothing happened.
    again = client.post(
        f"/registry/releases/{newer.pk}/channels/staging/rollback/",
        {"reason": "double click"},
        HTTP_HX_REQUEST="true",
    )
    assert again.status_code == 409 and 'id="page"' in again.content.decode()
    assert f"{staging} no longer points at {newer.pk}; nothing was rolled back." in again.content.decode()
    assert ChannelChange.objects.filter(channel=staging).count() == 3
    assert client.post(f"/registry/releases/{newer.pk}/channels/nowhere/rollback/").status_code == 404


def test_a_canary_needs_its_percentage(signed_in, platform_user, release):
    client = signed_in(platform_user)
    page = client.post(f"/registry/releases/{release.pk}/promote/", {"channel": "staging", "mode": "canary"})
    assert page.status_code == 422 and "A canary needs canary_percent" in page.content.decode()
    assert (
        client.post(
            f"/registry/releases/{release.pk}/promote/", {"channel": "staging", "mode": "shadow"}
        ).status_code
        == 302
    )
    assert Channel.objects.get(name="staging").mode == "shadow"


def test_production_refuses_a_release_without_its_gates(signed_in, platform_user, release):
    client = signed_in(platform_user)
    last_seq, changes = AuditEvent.objects.latest("seq").seq, ChannelChange.objects.count()
    page = client.post(f"/registry/releases/{release.pk}/promote/", {"channel": "production", "mode": "full"})
    html = page.content.decode()
    assert page.status_code == 409
    assert f"{release.pk} cannot be promoted" in html and "no evaluation results are attached" in html
    assert 'value="production"' in html  # the form keeps what was typed
    assert not Channel.objects.filter(name="production", release__isnull=False).exists()
    assert ChannelChange.objects.count() == changes
    recorded = set(AuditEvent.objects.filter(seq__gt=last_seq).values_list("action", flat=True))
    assert recorded <= {
        "release.promotion_refused"
    }  # the service keeps a record of the refusal, nothing else


def test_the_author_cannot_sign_off_but_a_colleague_can(signed_in, platform_user, release):
    client = signed_in(platform_user)
    assert "Sign off</button>" not in client.get(f"/registry/releases/{release.pk}/").content.decode()
    refused = client.post(f"/registry/releases/{release.pk}/sign-off/", {"comment": "looks good"})
    assert refused.status_code == 403
    assert "The author of a release cannot sign it off." in refused.content.decode()
    assert not ReleaseSignOff.objects.exists()

    colleague = UserFactory(username="platform2", roles=[PLATFORM])
    client = signed_in(colleague)
    assert (
        client.post(f"/registry/releases/{release.pk}/sign-off/", {"comment": "checked"}).status_code == 302
    )
    assert ReleaseSignOff.objects.get().user == colleague
    page = client.get(f"/registry/releases/{release.pk}/").content.decode()
    assert "1 of 2 sign-offs" in page and "Sign off</button>" not in page
    again = client.post(f"/registry/releases/{release.pk}/sign-off/", {"comment": "again"}, follow=True)
    assert f"You had already signed off {release.pk}." in again.content.decode()
    assert ReleaseSignOff.objects.get().comment == "checked"


def test_htmx_writes_reload_on_success_and_explain_a_refusal(signed_in, platform_user, release):
    client = signed_in(platform_user)
    refused = client.post(
        "/registry/agents/case_manager/lifecycle/", {"to_status": "retired"}, HTTP_HX_REQUEST="true"
    )
    assert refused.status_code == 422 and 'id="page"' in refused.content.decode()
    done = client.post(
        "/registry/agents/case_manager/lifecycle/", {"to_status": "deprecated"}, HTTP_HX_REQUEST="true"
    )
    assert done.status_code == 200 and done["HX-Redirect"] == "/registry/agents/case_manager/"


def test_diff_shows_a_changed_prompt_line_by_line(signed_in, reviewer, platform_user, release):
    newer = next_release(
        release, platform_user, "Sort <b>this</b> message into refund or question: {{ text }}"
    )
    page = signed_in(reviewer).get(f"/registry/releases/diff/?from={release.pk}&to={newer.pk}")
    html = page.content.decode()
    assert page.status_code == 200
    assert (
        '<span class="diff-del">-Classify this customer message into refund, incident or question: '
        "{{ text }}</span>"
    ) in html
    added = "+Sort &lt;b&gt;this&lt;/b&gt; message into refund or question: {{ text }}"
    assert f'<span class="diff-add">{added}</span>' in html
    assert '<span class="diff-file">--- triage@1</span>' in html
    assert '<span class="status status-changed">changed</span> prompt <code>triage</code>' in html
    assert html.count("status-unchanged") == len(release.artifacts.all()) - 1


def test_the_releases_to_compare_name_the_zone_of_their_time(signed_in, reviewer, release):
    html = signed_in(reviewer).get("/registry/releases/diff/").content.decode()
    created = timezone.localtime(release.created_at)
    assert f"{release.workflow} · {release.pk} · {created:%Y-%m-%d %H:%M} UTC</option>" in html


def test_diff_needs_two_releases_of_one_workflow(signed_in, reviewer, platform_user, release):
    artifact_publish(
        kind="workflow",
        name="escalation",
        author=platform_user,
        actor=actor_for(platform_user),
        content={
            "workflow": "escalation",
            "version": "1",
            "steps": [{"name": "decide", "human_if": ["x > 1"]}],
        },
    )
    other = release_create(
        spec={"workflow": "escalation", "policy_bundle": "default"},
        author=platform_user,
        actor=actor_for(platform_user),
    ).release
    client = signed_in(reviewer)
    page = client.get(f"/registry/releases/diff/?from={release.pk}&to={other.pk}")
    assert page.status_code == 422 and "Pick two releases of the same workflow." in page.content.decode()
    assert client.get("/registry/releases/diff/?from=rel_nope&to=rel_nope").status_code == 422
    prefilled = client.get(f"/registry/releases/diff/?to={release.pk}")
    assert (
        prefilled.status_code == 200
        and f'<option value="{release.pk}" selected>' in prefilled.content.decode()
    )


def test_list_pages_keep_their_query_count(signed_in, reviewer, platform_user, release):
    client = signed_in(reviewer)
    urls = ("/registry/agents/", "/registry/releases/", "/registry/artifacts/")
    few = {}
    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        few[url] = len(queries)

    actor = actor_for(platform_user)
    other_team = team_create(slug="billing", name="Billing", actor=actor)
    for n in range(20):
        agent_register(
            slug=f"bot-{n}", display_name=f"Bot {n}", owner_team=other_team if n % 2 else None, actor=actor
        )
    for n in range(6):
        newer = next_release(release, platform_user, f"Classify, take {n}: {{{{ text }}}}")
        Channel.objects.get_or_create(
            workflow=release.workflow, name=f"lane-{n}", defaults={"release": newer}
        )
    for n in range(10):
        artifact_publish(
            kind="prompt",
            name=f"extra-{n}",
            author=platform_user,
            actor=actor,
            content={"template": "Hi", "variables_schema": {"type": "object"}},
        )

    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            client.get(url)
        assert len(queries) == few[url], url
    assert client.get("/registry/agents/").content.decode().count('href="/registry/agents/') >= 24
    assert "lane-5" in client.get("/registry/releases/").content.decode()


def test_list_filters_and_htmx_fragments(signed_in, reviewer, release):
    client = signed_in(reviewer)
    Team.objects.create(slug="empty-team", name="Empty team")
    fragment = client.get("/registry/agents/?owner=empty-team", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and "No agent matches these filters." in fragment
    confidential = client.get("/registry/agents/?classification=confidential&status=active").content.decode()
    assert confidential.count("status-active") == 4
    prompts = client.get("/registry/artifacts/?kind=prompt").content.decode()
    assert "draft_reply" in prompts and "crm.update_case" not in prompts
    assert release.pk in client.get("/registry/releases/?workflow=support_case_resolution").content.decode()
    assert release.pk not in client.get("/registry/releases/?workflow=other").content.decode()


def test_untrusted_text_is_escaped(signed_in, reviewer, platform_user, release):
    agent_services.agent_register(
        slug="sneaky",
        display_name="<i>Sneaky</i>",
        actor=actor_for(platform_user),
        purpose="<script>alert(1)</script>",
    )
    client = signed_in(reviewer)
    detail = client.get("/registry/agents/sneaky/").content.decode()
    assert "<script>alert(1)</script>" not in detail and "&lt;script&gt;alert(1)&lt;/script&gt;" in detail
    assert "<i>Sneaky</i>" not in detail
    assert 'href="javascript:' not in detail
    assert "<i>Sneaky</i>" not in client.get("/registry/agents/").content.decode()


def demo_definition() -> dict:
    source = yaml.safe_load(SUPPORT_BUNDLE.read_text())["workflows"]["support_case_resolution"]
    data, problems = wf.load_source(source)
    assert problems == []
    return wf.normalise(data)


def test_state_diagram_of_the_demo_workflow():
    diagram = mermaid_state_diagram(demo_definition(), highlight=["triage", "retrieve", "human", "nowhere"])
    lines = [line.strip() for line in diagram.splitlines()]
    assert lines[0] == "stateDiagram-v2"
    for edge in (
        "[*] --> s_triage",
        "s_triage --> s_retrieve",
        "s_triage --> s_human",
        "s_triage --> s_human : error",
        "s_retrieve --> s_draft",
        "s_draft --> s_validate",
        "s_validate --> s_approve",
        "s_approve --> s_commit",
        "s_approve --> [*] : reject",
        "s_commit --> [*]",
    ):
        assert edge in lines, edge
    assert 'state "human" as s_human' in lines and 'state "fail" as s_fail' not in lines
    assert "class s_triage,s_retrieve,s_human visited" in lines


def test_state_diagram_sanitises_names_and_labels():
    definition = {"steps": [{"name": 'odd name"<x>', "on_error": "fail"}, {"name": "note", "next": ["end"]}]}
    diagram = mermaid_state_diagram(definition)
    assert 'state "odd name#34;#60;x#62;" as s_odd_name__x_' in diagram
    assert "s_odd_name__x_ --> s_fail : error" in diagram and "s_note --> [*]" in diagram
    assert "classDef" not in diagram
