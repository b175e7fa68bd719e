"""Registry writes made twice at the same moment (a double click, a client's retry, two people):
one change is made and audited, the other request gets the object it made or a clear refusal."""

from functools import partial

import pytest
from django.db import connection

from controlplane.errors import Conflict
from controlplane.identity import Actor
from controlplane.models import ApiKey, AuditEvent
from registry.models import Agent, Artifact, Channel, ChannelChange, Release, ReleaseSignOff, Team
from registry.services import agents as agent_services
from registry.services import releases as release_services
from registry.services.artifacts import Publication, artifact_publish
from registry.services.bundles import ApplyReport, bundle_apply
from tests.factories import UserFactory
from tests.integration.races import at_once, overlapping, twice

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent connections are what is tested"),
]
ACTOR = Actor("platform", roles=frozenset({"platform"}))
PROMPT = {"template": "Hello {{ name }}", "variables_schema": {"type": "object"}}


def events(action: str) -> int:
    return AuditEvent.objects.filter(action=action).count()


def publishing(content: dict, author):
    return lambda: artifact_publish(
        kind="prompt", name="greeting", content=content, author=author, actor=ACTOR
    )


# Artifacts


@pytest.mark.parametrize("versions_before", [0, 1])
def test_the_same_content_published_twice_at_once_is_one_version(platform_user, versions_before):
    if versions_before:
        publishing({**PROMPT, "template": "Hi"}, platform_user)()
    outcomes = overlapping(publishing(PROMPT, platform_user), publishing(PROMPT, platform_user))
    assert all(isinstance(outcome, Publication) for outcome in outcomes), outcomes
    assert [outcome.created for outcome in outcomes] == [True, False]
    assert outcomes[0].artifact.pk == outcomes[1].artifact.pk
    assert outcomes[0].artifact.version == versions_before + 1
    assert Artifact.objects.filter(name="greeting").count() == versions_before + 1
    assert events("artifact.published") == versions_before + 1


def test_two_contents_published_at_once_become_two_versions(platform_user):
    outcomes = at_once(
        publishing({**PROMPT, "template": "Hi"}, platform_user), publishing(PROMPT, platform_user)
    )
    assert all(isinstance(outcome, Publication) and outcome.created for outcome in outcomes), outcomes
    assert sorted(outcome.artifact.version for outcome in outcomes) == [1, 2]
    assert events("artifact.published") == 2


def test_a_double_post_of_an_artifact_answers_created_then_unchanged(platform_user, client_for):
    client = client_for(platform_user, scopes=["registry:write"])
    outcomes = twice(
        lambda: client.post(
            "/api/v1/artifacts/prompt", {"name": "greeting", "content": PROMPT}, format="json"
        )
    )
    assert sorted(response.status_code for response in outcomes) == [200, 201]
    assert {response.json()["version"] for response in outcomes} == {1}


# Teams and agents


def test_a_team_created_twice_at_once_is_created_once(platform_user):
    outcomes = twice(lambda: agent_services.team_create(slug="payments", name="Payments", actor=ACTOR))
    assert sum(isinstance(outcome, Team) for outcome in outcomes) == 1
    (refused,) = [outcome for outcome in outcomes if not isinstance(outcome, Team)]
    assert isinstance(refused, Conflict) and "already exists" in refused.detail
    assert events("team.created") == 1


def test_an_agent_registered_twice_at_once_is_registered_once(platform_user):
    outcomes = twice(lambda: agent_services.agent_register(slug="helper", display_name="Helper", actor=ACTOR))
    assert sum(isinstance(outcome, Agent) for outcome in outcomes) == 1
    (refused,) = [outcome for outcome in outcomes if not isinstance(outcome, Agent)]
    assert isinstance(refused, Conflict) and "already exists" in refused.detail
    assert events("agent.registered") == 1


def test_a_double_post_registering_an_agent_answers_created_then_conflict(platform_user, client_for):
    client = client_for(platform_user, scopes=["registry:write"])
    outcomes = twice(
        lambda: client.post("/api/v1/agents", {"slug": "helper", "display_name": "Helper"}, format="json")
    )
    assert sorted(response.status_code for response in outcomes) == [201, 409]


def test_one_lifecycle_move_asked_twice_at_once_is_made_once():
    agent = agent_services.agent_register(slug="helper", display_name="Helper", actor=ACTOR)
    outcomes = twice(
        lambda: agent_services.agent_transition(agent=agent, to_status="retired", actor=ACTOR, reason="gone")
    )
    assert all(isinstance(outcome, Agent) and outcome.status == "retired" for outcome in outcomes), outcomes
    assert events("agent.lifecycle") == 1


def test_a_key_asked_for_while_the_agent_retires_is_refused():
    """Retirement deactivates the agent's identity; a key issued at that moment must not be
    handed out (shown once, audited as issued, and unusable)."""
    agent = agent_services.agent_register(slug="helper", display_name="Helper", actor=ACTOR)
    _, issued = overlapping(
        lambda: agent_services.agent_transition(agent=agent, to_status="retired", actor=ACTOR, reason="gone"),
        lambda: agent_services.agent_issue_key(agent=agent, actor=ACTOR),
    )
    assert isinstance(issued, Conflict) and "retired" in issued.detail, issued
    assert not ApiKey.objects.filter(user=agent.service_user).exists()
    assert events("api_key.issued") == 0


# Releases


def spec_of(release: Release) -> dict:
    return {"workflow": release.workflow, "policy_bundle": "default", "agents": release.manifest["agents"]}


def second_release(first: Release, author) -> Release:
    artifact_publish(
        kind="prompt",
        name="triage",
        content={**PROMPT, "template": "Classify: {{ text }}"},
        author=author,
        actor=ACTOR,
    )
    return release_services.release_create(spec=spec_of(first), author=author, actor=ACTOR).release


def test_a_release_made_twice_at_once_from_one_spec_is_one_release(demo_registry, platform_user):
    first = Release.objects.get()
    artifact_publish(
        kind="prompt",
        name="triage",
        content={**PROMPT, "template": "Classify"},
        author=platform_user,
        actor=ACTOR,
    )
    creating = partial(
        release_services.release_create, spec=spec_of(first), author=platform_user, actor=ACTOR
    )
    outcomes = overlapping(creating, creating)
    assert [outcome.created for outcome in outcomes] == [True, False], outcomes
    assert outcomes[0].release.pk == outcomes[1].release.pk
    assert Release.objects.count() == 2
    assert events("release.created") == 2


def test_a_promotion_to_a_new_channel_made_twice_at_once_is_one_change(demo_registry):
    release = Release.objects.get()
    outcomes = twice(lambda: release_services.release_promote(release=release, channel="qa", actor=ACTOR))
    assert all(isinstance(outcome, Channel) and outcome.release_id == release.pk for outcome in outcomes), (
        outcomes
    )
    channel = Channel.objects.get(name="qa")
    assert ChannelChange.objects.filter(channel=channel).count() == 1
    assert AuditEvent.objects.filter(action="channel.promoted", payload__channel="qa").count() == 1


def test_two_rollout_changes_at_once_take_turns(demo_registry, platform_user):
    first = Release.objects.get()
    second = second_release(first, platform_user)
    staging = release_services.release_promote(
        release=second, channel="staging", mode="canary", canary_percent=10, actor=ACTOR
    )
    outcomes = at_once(
        lambda: release_services.release_promote(
            release=second, channel="staging", mode="canary", canary_percent=50, actor=ACTOR
        ),
        lambda: release_services.release_promote(release=second, channel="staging", actor=ACTOR),
    )
    assert all(isinstance(outcome, Channel) for outcome in outcomes), outcomes
    staging.refresh_from_db()
    last = ChannelChange.objects.filter(channel=staging).latest("pk")
    assert (staging.release_id, staging.baseline_id) == (second.pk, first.pk)
    assert (staging.mode, staging.canary_percent) == (last.mode, last.canary_percent)
    assert ChannelChange.objects.filter(channel=staging).count() == 4  # first, canary 10, and both changes
    assert AuditEvent.objects.filter(action="channel.promoted", payload__channel="staging").count() == 4


@pytest.mark.parametrize("rollback_first", [True, False])
def test_a_promotion_and_a_rollback_at_once_take_turns(demo_registry, platform_user, rollback_first):
    first = Release.objects.get()
    second = second_release(first, platform_user)
    staging = release_services.release_promote(release=second, channel="staging", actor=ACTOR)
    third_prompt = {**PROMPT, "template": "Sort: {{ text }}"}
    artifact_publish(kind="prompt", name="triage", content=third_prompt, author=platform_user, actor=ACTOR)
    third = release_services.release_create(spec=spec_of(first), author=platform_user, actor=ACTOR).release

    def promote():
        return release_services.release_promote(release=third, channel="staging", actor=ACTOR)

    def roll_back():
        return release_services.channel_rollback(channel=staging, actor=ACTOR, from_release=second.pk)

    if rollback_first:
        rolled_back, promoted = overlapping(roll_back, promote)
    else:
        promoted, rolled_back = overlapping(promote, roll_back)
    staging.refresh_from_db()
    assert isinstance(promoted, Channel), promoted
    if rollback_first:  # back to the first release, then on to the third
        assert isinstance(rolled_back, Channel), rolled_back
        assert (staging.release_id, staging.baseline_id) == (third.pk, first.pk)
    else:  # the rollback was asked of the second release, which the channel has left
        assert isinstance(rolled_back, Conflict) and "no longer points at" in rolled_back.detail
        assert (staging.release_id, staging.baseline_id) == (third.pk, second.pk)
    changes = ChannelChange.objects.filter(channel=staging).count()
    assert (
        AuditEvent.objects.filter(action__startswith="channel.", payload__channel="staging").count()
        == changes
    )


def test_a_rollback_clicked_twice_at_once_rolls_back_one_step(demo_registry, platform_user):
    first = Release.objects.get()
    second = second_release(first, platform_user)
    staging = release_services.release_promote(release=second, channel="staging", actor=ACTOR)
    outcomes = twice(
        lambda: release_services.channel_rollback(channel=staging, actor=ACTOR, from_release=second.pk)
    )
    assert sum(isinstance(outcome, Channel) for outcome in outcomes) == 1, outcomes
    assert sum(isinstance(outcome, Conflict) for outcome in outcomes) == 1
    staging.refresh_from_db()
    assert staging.release_id == first.pk
    assert events("channel.rolled_back") == 1


def test_a_sign_off_sent_twice_at_once_counts_once(demo_registry):
    release = Release.objects.get()
    signer = UserFactory(username="signer")
    outcomes = twice(lambda: release_services.release_sign_off(release=release, user=signer, actor=ACTOR))
    assert all(isinstance(outcome, release_services.SignOff) for outcome in outcomes), outcomes
    assert sorted(outcome.created for outcome in outcomes) == [False, True]
    assert ReleaseSignOff.objects.filter(release=release).count() == 1
    assert events("release.signed_off") == 1
    assert "1 of 2 sign-offs by people other than the author" in release_services.promotion_gate_problems(
        release
    )


def test_one_bundle_applied_twice_at_once_is_applied_once(platform_user, support_bundle):
    """Two deploy pipelines apply the same release file at the same moment."""
    outcomes = twice(lambda: bundle_apply(bundle=support_bundle, author=platform_user, actor=ACTOR))
    assert all(isinstance(outcome, ApplyReport) for outcome in outcomes), outcomes
    assert sorted(bool(outcome.created) for outcome in outcomes) == [False, True]
    assert outcomes[0].releases == outcomes[1].releases
    assert events("team.created") == Team.objects.count()
    assert events("agent.registered") == Agent.objects.count()
    assert events("release.created") == Release.objects.count() == 1


def test_an_agent_in_a_bundle_applied_twice_at_once_is_registered_once(demo_registry, platform_user):
    bundle = {"agents": [{"slug": "helper", "display_name": "Helper"}]}
    outcomes = twice(lambda: bundle_apply(bundle=bundle, author=platform_user, actor=ACTOR))
    assert all(isinstance(outcome, ApplyReport) for outcome in outcomes), outcomes
    assert sorted(outcome.created for outcome in outcomes) == [[], ["agent helper"]]
    assert AuditEvent.objects.filter(action="agent.registered", payload__slug="helper").count() == 1
