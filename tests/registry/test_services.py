import copy
from decimal import Decimal

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, transaction

from controlplane.audit import verify_chain
from controlplane.canonical import digest
from controlplane.errors import Conflict, Forbidden, InvalidInput
from controlplane.identity import Actor, api_key_authenticate
from controlplane.models import AuditEvent
from registry.models import Agent, Artifact, Channel, Release, Team
from registry.services import agents as agent_services
from registry.services import releases as release_services
from registry.services.artifacts import artifact_publish
from registry.services.bundles import bundle_apply, bundle_export, load_bundle_file
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
ACTOR = Actor("platform", roles=frozenset({"platform"}))
PROMPT = {"template": "Hello {{ name }}", "variables_schema": {"type": "object"}}


def publish(kind, name, content, author):
    return artifact_publish(kind=kind, name=name, content=content, author=author, actor=ACTOR)


def workflow_source(**changes) -> dict:
    """The demo workflow as data, with `changes` applied to its steps by name."""
    from tests.registry.conftest import SUPPORT_BUNDLE

    definition = yaml.safe_load(
        yaml.safe_load(SUPPORT_BUNDLE.read_text())["workflows"]["support_case_resolution"]
    )
    for step in definition["steps"]:
        ((name, body),) = step.items()
        if name in changes:
            body.update(changes[name])
            for key in [k for k, v in body.items() if v is None]:
                del body[key]
    return definition


# Artifacts


def test_publishing_versions_and_digests(platform_user):
    first = publish("prompt", "greeting", PROMPT, platform_user)
    same = publish(
        "prompt",
        "greeting",
        {"variables_schema": {"type": "object"}, "template": "Hello {{ name }}"},
        platform_user,
    )
    second = publish("prompt", "greeting", {**PROMPT, "template": "Hi {{ name }}"}, platform_user)

    assert (first.created, same.created, second.created) == (True, False, True)
    assert same.artifact == first.artifact
    assert (first.artifact.version, second.artifact.version) == (1, 2)
    assert first.artifact.digest == digest(PROMPT)
    assert AuditEvent.objects.filter(action="artifact.published").count() == 2


def test_published_artifacts_are_immutable_in_the_database(platform_user):
    artifact = publish("prompt", "greeting", PROMPT, platform_user).artifact

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        Artifact.objects.filter(pk=artifact.pk).update(content={"template": "changed"})
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        Artifact.objects.filter(pk=artifact.pk).delete()
    artifact.refresh_from_db()
    assert artifact.content == PROMPT


@pytest.mark.parametrize(
    ("kind", "content", "path"),
    [
        ("prompt", {"template": "x", "variables_schema": {"type": "nonsense"}}, "$.variables_schema.type"),
        ("prompt", {"template": "x"}, "$"),
        ("prompt", {**PROMPT, "extra": 1}, "$"),
        (
            "tool",
            {
                "args_schema": {},
                "result_schema": {},
                "side_effect": "explosive",
                "transport": {"type": "sandbox"},
            },
            "$.side_effect",
        ),
        (
            "tool",
            {"args_schema": {}, "result_schema": {}, "side_effect": "read", "transport": {"type": "http"}},
            "$.transport.url",
        ),
        ("model_config", {"provider": "magic", "model": "x"}, "$.provider"),
        (
            "model_config",
            {"provider": "openai_compatible", "model": "x", "api_key_env": "SECRET_KEY"},
            "$.api_key_env",
        ),
        ("corpus", {"corpus_id": "c", "version": "1", "digest": "short"}, "$.digest"),
        ("policy_bundle", {"modules": {"a.rego": "package a\n" + "#" * 300_000}}, "$.modules.a.rego"),
        ("policy_bundle", {"modules": {}}, "$.modules"),
    ],
    ids=[
        "prompt-schema-not-a-schema",
        "prompt-missing",
        "prompt-unknown-field",
        "tool-side-effect",
        "http-tool-without-url",
        "model-provider",
        "model-key-outside-the-model-key-variables",
        "corpus-digest",
        "rego-oversized",
        "bundle-empty",
    ],
)
def test_invalid_artifact_content_is_refused_with_its_path(platform_user, kind, content, path):
    with pytest.raises(InvalidInput) as refused:
        publish(kind, "thing", content, platform_user)
    assert path in [problem["path"] for problem in refused.value.errors["problems"]]
    assert not Artifact.objects.exists()


def test_a_schema_nested_too_deeply_is_a_problem_not_a_crash(platform_user):
    schema = {}
    for _ in range(400):
        schema = {"items": schema}
    with pytest.raises(InvalidInput) as refused:
        publish("prompt", "deep", {"template": "x", "variables_schema": schema}, platform_user)
    assert refused.value.errors["problems"] == [
        {"path": "$.variables_schema", "message": "not a valid JSON Schema: nested too deeply"}
    ]


def test_invalid_names_and_kinds_are_refused(platform_user):
    with pytest.raises(InvalidInput, match="names"):
        publish("prompt", "Bad Name!", PROMPT, platform_user)
    with pytest.raises(InvalidInput, match="kind"):
        publish("spell", "x", PROMPT, platform_user)


# Workflow definitions


def test_demo_workflow_is_valid_and_stored_normalised(demo_registry):
    workflow = Artifact.objects.get(kind="workflow", name="support_case_resolution")
    assert [step["name"] for step in workflow.content["steps"]] == [
        "triage",
        "retrieve",
        "draft",
        "validate",
        "approve",
        "commit",
    ]
    assert workflow.content["version"] == "1.3.2"


@pytest.mark.parametrize(
    ("definition", "path", "message"),
    [
        (workflow_source(triage={"agent": "ghost"}), "$.steps[0].agent", "unknown agent 'ghost'"),
        (workflow_source(retrieve={"tool": "kb_delete"}), "$.steps[1].tool", "unknown tool 'kb_delete'"),
        (
            workflow_source(retrieve={"agent": "policy_checker"}),
            "$.steps[1].tool",
            "agent 'policy_checker' is not allowed tool 'kb_search'",
        ),
        (workflow_source(commit={"agent": "response_writer", "tool": "kb_search"}), None, None),
        (
            workflow_source(triage={"next": ["retrieve", "escalate"]}),
            "$.steps[0].next[1]",
            "transition to undefined state 'escalate'",
        ),
        (
            workflow_source(validate={"next": ["commit"], "route": None}),
            "$.steps[4]",
            "state 'approve' is unreachable",
        ),
        (workflow_source(commit={"compensate": None}), None, None),
        (
            workflow_source(approve={"human_if": ["refund_amount >> 500"]}),
            "$.steps[4].human_if[0]",
            "cannot parse condition",
        ),
        (
            workflow_source(retrieve={"corpus": "old_corpus"}),
            "$.steps[1].corpus",
            "unknown corpus 'old_corpus'",
        ),
        (workflow_source(draft={"temperature": 2}), "$.steps[2]", "Additional properties"),
        (workflow_source(triage={"on_error": "nowhere"}), "$.steps[0].on_error", "undefined state 'nowhere'"),
    ],
    ids=[
        "unknown-agent",
        "unknown-tool",
        "tool-not-allowed",
        "valid-other-agent",
        "undefined-transition",
        "unreachable-state",
        "irreversible-falls-back-to-tool-compensation",
        "unparseable-condition",
        "unknown-corpus",
        "unknown-step-field",
        "undefined-error-target",
    ],
)
def test_workflow_problems_are_reported_with_their_path(
    demo_registry, platform_user, definition, path, message
):
    if path is None or message is None:
        # Valid variations: they publish as a new version.
        assert publish("workflow", "support_case_resolution", definition, platform_user).created
        return
    with pytest.raises(InvalidInput) as refused:
        publish("workflow", "support_case_resolution", definition, platform_user)
    problems = refused.value.errors["problems"]
    assert any(p["path"] == path and message in p["message"] for p in problems), problems
    assert Artifact.objects.filter(kind="workflow").count() == 1


def test_agent_lacking_the_scope_a_tool_needs_is_refused(demo_registry, platform_user):
    case_manager = Agent.objects.get(slug="case_manager")
    agent_services.agent_update(
        agent=case_manager,
        actor=ACTOR,
        changes={
            "allowed_tools": [
                {"tool": "crm.get_case", "scope": "read"},
                {"tool": "crm.update_case", "scope": "write"},
                {"tool": "crm.reopen_case", "scope": "write"},
            ]
        },
    )

    with pytest.raises(InvalidInput) as refused:
        publish(
            "workflow",
            "support_case_resolution",
            workflow_source(commit={"reconcile_before_retry": False}),
            platform_user,
        )
    assert "has scope 'write' on 'crm.update_case', which needs 'irreversible'" in str(refused.value.errors)


def test_irreversible_tool_without_any_compensation_is_refused(demo_registry, platform_user):
    tool = Artifact.objects.get(kind="tool", name="crm.update_case").content
    publish(
        "tool", "crm.update_case", {k: v for k, v in tool.items() if k != "compensation_tool"}, platform_user
    )

    with pytest.raises(InvalidInput) as refused:
        publish(
            "workflow", "support_case_resolution", workflow_source(commit={"compensate": None}), platform_user
        )
    assert "irreversible tool 'crm.update_case' has no compensation" in str(refused.value.errors)


def test_workflow_source_text_errors(demo_registry, platform_user):
    with pytest.raises(InvalidInput, match="invalid YAML at line 2"):
        publish("workflow", "support_case_resolution", "workflow: x\nsteps: [", platform_user)
    with pytest.raises(InvalidInput, match="aliases"):
        publish("workflow", "support_case_resolution", "a: &x [1]\nb: *x\n", platform_user)
    with pytest.raises(InvalidInput, match="named 'support_case_resolution', not 'other'"):
        publish("workflow", "other", workflow_source(), platform_user)


# Agents


def register(slug="helper", **fields):
    return agent_services.agent_register(slug=slug, display_name=slug.title(), actor=ACTOR, **fields)


def test_registration_gives_the_agent_its_own_identity():
    agent = register()
    assert agent.status == "draft"
    assert agent.service_user.username == "agent.helper"
    assert not agent.service_user.has_usable_password()
    issued = agent_services.agent_issue_key(agent=agent, actor=ACTOR)
    key = api_key_authenticate(issued.secret)
    assert key.user == agent.service_user
    assert "registry:write" not in key.scopes
    with pytest.raises(InvalidInput, match="registry:write"):
        agent_services.agent_issue_key(agent=agent, actor=ACTOR, scopes=["registry:write"])


def test_activation_needs_owner_runbook_and_slos(demo_registry):
    agent = register()
    with pytest.raises(InvalidInput) as refused:
        agent_services.agent_transition(agent=agent, to_status="active", actor=ACTOR)
    assert set(refused.value.errors) == {
        "owner_team",
        "runbook_url",
        "slo_p95_latency_ms",
        "slo_success_rate",
    }

    agent_services.agent_update(
        agent=agent,
        actor=ACTOR,
        changes={
            "owner_team": Agent.objects.get(slug="case_manager").owner_team,
            "runbook_url": "https://rb.example/h",
            "slo_p95_latency_ms": 900,
            "slo_success_rate": Decimal("0.99"),
        },
    )
    assert agent_services.agent_transition(agent=agent, to_status="active", actor=ACTOR).status == "active"
    with pytest.raises(InvalidInput, match="cannot be active"):
        agent_services.agent_update(agent=agent, actor=ACTOR, changes={"runbook_url": ""})


def test_lifecycle_rules_and_audit():
    agent = register()
    with pytest.raises(Conflict, match="from draft to deprecated"):
        agent_services.agent_transition(agent=agent, to_status="deprecated", actor=ACTOR)
    with pytest.raises(InvalidInput, match="reason"):
        agent_services.agent_transition(agent=agent, to_status="retired", actor=ACTOR, reason=" ")
    key = agent_services.agent_issue_key(agent=agent, actor=ACTOR)

    retired = agent_services.agent_transition(
        agent=agent, to_status="retired", actor=ACTOR, reason="replaced"
    )

    assert retired.status == "retired" and retired.retirement_reason == "replaced"
    assert retired.retired_at is not None
    assert api_key_authenticate(key.secret) is None  # its identity is retired with it
    with pytest.raises(Conflict):
        agent_services.agent_transition(agent=retired, to_status="active", actor=ACTOR)
    with pytest.raises(Conflict, match="retired"):
        agent_services.agent_update(agent=retired, actor=ACTOR, changes={"purpose": "again"})
    actions = list(
        AuditEvent.objects.filter(object_id=str(agent.pk), object_type="registry.agent").values_list(
            "action", flat=True
        )
    )
    assert actions == ["agent.registered", "agent.lifecycle"]
    assert AuditEvent.objects.get(action="agent.lifecycle").payload == {
        "from": "draft",
        "to": "retired",
        "reason": "replaced",
    }


def test_allowed_tools_must_be_published_and_scoped(demo_registry):
    with pytest.raises(InvalidInput, match="Unknown tool"):
        register(allowed_tools=[{"tool": "rm_rf", "scope": "write"}])
    with pytest.raises(InvalidInput, match="Unknown scope"):
        register(allowed_tools=[{"tool": "kb_search", "scope": "admin"}])
    assert not Agent.objects.filter(slug="helper").exists()


# Releases


def test_release_pins_everything_and_is_content_addressed(demo_registry):
    release = Release.objects.get()
    manifest = release.manifest
    assert release.id == f"rel_{release.digest[:16]}"
    assert release.digest == digest(manifest)
    assert set(manifest["artifacts"]) == {
        "workflow",
        "prompt",
        "model_config",
        "tool",
        "corpus",
        "policy_bundle",
    }
    assert set(manifest["artifacts"]["tool"]) == {
        "kb_search",
        "crm.update_case",
        "crm.reopen_case",
        "crm.get_case",
    }
    assert set(release.agents.values_list("slug", flat=True)) == {
        "intake_classifier",
        "response_writer",
        "policy_checker",
        "case_manager",
    }
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        Release.objects.filter(pk=release.pk).update(notes="rewritten")


def test_release_apply_is_idempotent(demo_registry, platform_user, support_bundle):
    counts = (
        Artifact.objects.count(),
        Release.objects.count(),
        Agent.objects.count(),
        AuditEvent.objects.count(),
    )
    report = bundle_apply(bundle=copy.deepcopy(support_bundle), author=platform_user, actor=ACTOR)
    assert report.created == []
    assert (
        Artifact.objects.count(),
        Release.objects.count(),
        Agent.objects.count(),
        AuditEvent.objects.count(),
    ) == counts


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (yaml.safe_dump({"teams": [{"name": "x"}]}), "$.teams[0]: 'slug' is a required property"),
        (
            yaml.safe_dump({"releases": [{"policy_bundle": "default"}]}),
            "$.releases[0]: 'workflow' is a required",
        ),
        (yaml.safe_dump({"artifacts": [1]}), "$.artifacts: [1] is not of type 'object'"),
        (
            yaml.safe_dump(
                {"agents": [{"slug": "a", "display_name": "A", "slo": {"p95_latency_ms": 10**20}}]}
            ),
            "$.agents[0].slo.p95_latency_ms: 100000000000000000000 is greater than the maximum of 2147483647",
        ),
        ("teams: " + "[" * 20_000, "bundle.yaml: nested too deeply"),
        (
            yaml.safe_dump(
                {"artifacts": {"prompt": {"p": {"template": "x", "variables_schema": {}}}}}
            ).replace("{}", "{items: " * 150 + "{}" + "}" * 150),
            "bundle.yaml is invalid: nested too deeply",
        ),
    ],
    ids=[
        "team-without-slug",
        "release-without-workflow",
        "artifacts-not-a-mapping",
        "slo-too-large",
        "deep-yaml",
        "deep-schema",
    ],
)
def test_release_apply_explains_a_bundle_of_the_wrong_shape(platform_user, tmp_path, text, problem):
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text(text)
    with pytest.raises(CommandError) as refused:
        call_command("release_apply", str(bundle), "--as", platform_user.username)
    assert problem in str(refused.value)
    assert not (Team.objects.exists() or Agent.objects.exists() or Artifact.objects.exists())


def test_an_exported_bundle_has_the_shape_of_a_bundle_file(demo_registry, tmp_path):
    bundle = tmp_path / "exported.yaml"
    bundle.write_text(yaml.safe_dump(bundle_export(Release.objects.get())))
    assert load_bundle_file(bundle)["releases"][0]["workflow"] == "support_case_resolution"


def test_export_then_apply_recreates_the_same_release_content(demo_registry, platform_user):
    release = Release.objects.get()
    exported = bundle_export(release)
    report = bundle_apply(bundle=yaml.safe_load(yaml.safe_dump(exported)), author=platform_user, actor=ACTOR)
    assert report.created == []
    assert report.releases == [release.id]


def test_a_release_cannot_use_a_retired_agent(demo_registry, platform_user):
    agent_services.agent_transition(
        agent=Agent.objects.get(slug="policy_checker"),
        to_status="retired",
        actor=ACTOR,
        reason="replaced by a new checker",
    )
    publish("prompt", "triage", {**PROMPT, "template": "Classify: {{ text }}"}, platform_user)
    with pytest.raises(InvalidInput, match="agent 'policy_checker' is retired"):
        release_services.release_create(
            spec={
                "workflow": "support_case_resolution",
                "policy_bundle": "default",
                "agents": Release.objects.get().manifest["agents"],
            },
            author=platform_user,
            actor=ACTOR,
        )
    with pytest.raises(Conflict, match="retired"):
        release_services.release_promote(release=Release.objects.get(), channel="canary-lab", actor=ACTOR)


def test_release_needs_bindings_for_model_steps(demo_registry, platform_user):
    with pytest.raises(InvalidInput) as refused:
        release_services.release_create(
            spec={"workflow": "support_case_resolution", "policy_bundle": "default", "agents": {}},
            author=platform_user,
            actor=ACTOR,
        )
    assert "needs a prompt and a model_config" in str(refused.value.errors)
    assert Release.objects.count() == 1


def _reviewers(count):
    return [UserFactory(username=f"signer{n}") for n in range(count)]


def test_production_needs_evaluations_and_two_other_people(demo_registry, platform_user):
    release = Release.objects.get()
    with pytest.raises(Conflict) as refused:
        release_services.release_promote(release=release, channel="production", actor=ACTOR)
    assert refused.value.errors["gates"] == [
        "no evaluation results are attached",
        "0 of 2 sign-offs by people other than the author",
    ]

    with pytest.raises(Forbidden, match="author"):
        release_services.release_sign_off(release=release, user=platform_user, actor=ACTOR)
    first, second = _reviewers(2)
    release_services.release_sign_off(release=release, user=first, actor=ACTOR)
    release_services.release_sign_off(release=release, user=first, actor=ACTOR)  # twice is still one person
    release_services.release_record_evaluation(
        release=release,
        suite="golden",
        score=Decimal("0.85"),
        details={},
        recorded_by=platform_user,
        actor=ACTOR,
    )
    assert release_services.promotion_gate_problems(release) == [
        "evaluations below 0.9: golden",
        "1 of 2 sign-offs by people other than the author",
    ]

    release_services.release_sign_off(release=release, user=second, actor=ACTOR)
    release_services.release_record_evaluation(
        release=release,
        suite="golden",
        score=Decimal("0.95"),
        details={},
        recorded_by=platform_user,
        actor=ACTOR,
    )
    channel = release_services.release_promote(release=release, channel="production", actor=ACTOR)
    assert (channel.release_id, channel.mode, channel.requires_gates) == (release.id, "full", True)


def test_promotion_canary_and_one_step_rollback(demo_registry, platform_user):
    first = Release.objects.get()
    publish("prompt", "triage", {**PROMPT, "template": "Classify: {{ text }}"}, platform_user)
    second = release_services.release_create(
        spec={
            "workflow": "support_case_resolution",
            "policy_bundle": "default",
            "agents": first.manifest["agents"],
        },
        author=platform_user,
        actor=ACTOR,
    ).release
    assert second.id != first.id

    channel = release_services.release_promote(
        release=second, channel="staging", mode="canary", canary_percent=10, actor=ACTOR
    )
    assert (channel.release_id, channel.baseline_id, channel.mode, channel.canary_percent) == (
        second.id,
        first.id,
        "canary",
        10,
    )
    channel = release_services.release_promote(release=second, channel="staging", actor=ACTOR)
    assert (channel.release_id, channel.baseline_id, channel.mode) == (second.id, first.id, "full")

    rolled_back = release_services.channel_rollback(channel=channel, actor=ACTOR, reason="error rate up")
    assert (rolled_back.release_id, rolled_back.baseline_id, rolled_back.mode) == (first.id, None, "full")
    with pytest.raises(Conflict, match="no previous release"):
        release_services.channel_rollback(channel=rolled_back, actor=ACTOR)
    actions = list(rolled_back.changes.order_by("created_at", "pk").values_list("action", flat=True))
    assert actions == ["promote", "promote", "promote", "rollback"]
    assert AuditEvent.objects.filter(action="channel.rolled_back").get().payload["reason"] == "error rate up"
    assert verify_chain().ok


def test_promotion_input_is_checked(demo_registry):
    release = Release.objects.get()
    for kwargs in (
        {"mode": "canary"},
        {"mode": "canary", "canary_percent": 100},
        {"canary_percent": 5},
        {"mode": "blue-green"},
    ):
        with pytest.raises(InvalidInput):
            release_services.release_promote(release=release, channel="staging", actor=ACTOR, **kwargs)
    assert Channel.objects.get(name="staging").mode == "full"


def test_refused_promotion_creates_no_channel_and_stale_rollback_is_refused(demo_registry, platform_user):
    release = Release.objects.get()
    with pytest.raises(Conflict):
        release_services.release_promote(release=release, channel="production", actor=ACTOR)
    assert not Channel.objects.filter(name="production").exists()
    assert AuditEvent.objects.filter(action="release.promotion_refused").count() == 1
    with pytest.raises(InvalidInput, match="channel name"):
        release_services.release_promote(release=release, channel="Prod uction", actor=ACTOR)

    staging = Channel.objects.get(name="staging")
    with pytest.raises(Conflict, match="no longer points at rel_other"):
        release_services.channel_rollback(channel=staging, actor=ACTOR, from_release="rel_other")


def test_runbook_urls_must_be_web_links():
    with pytest.raises(InvalidInput, match="http"):
        register(runbook_url="javascript:alert(1)")
    assert not Agent.objects.filter(slug="helper").exists()
