"""Registry lists keep their number of queries however many rows they show and whoever wrote them."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.identity import PLATFORM, actor_for
from registry.models import Channel, Release
from registry.services.agents import agent_register, team_create
from registry.services.releases import release_sign_off
from tests.factories import UserFactory

from .test_api import READ
from .test_pages import next_release

pytestmark = pytest.mark.django_db


def test_releases_teams_channels_and_versions_keep_their_query_count(
    demo_registry, platform_user, client_for, signed_in
):
    first = Release.objects.get(pk=demo_registry.releases[0])
    api, browser = client_for(platform_user, scopes=READ), signed_in(platform_user)
    api.get("/api/v1/teams")  # the key's first use is recorded once
    lists = {
        "/api/v1/agents": api,
        "/api/v1/releases": api,
        "/api/v1/teams": api,
        "/api/v1/channels": api,
        "/api/v1/artifacts/prompt/triage": api,
        "/registry/artifacts/prompt/triage/": browser,
    }

    def counts() -> dict[str, int]:
        counted = {}
        for path, client in lists.items():
            with CaptureQueriesContext(connection) as queries:
                assert client.get(path).status_code == 200, path
            counted[path] = len(queries)
        return counted

    few = counts()
    # Each new release (and triage prompt version) by another author, signed off by another
    # colleague, serving a channel of its own against the first release as baseline; each new
    # team with members of its own and an agent.
    for n in range(4):
        author, colleague = (
            UserFactory(username=f"{who}-{n}", roles=[PLATFORM]) for who in ("author", "peer")
        )
        newer = next_release(first, author, f"Classify, take {n}: {{{{ text }}}}")
        release_sign_off(release=newer, user=colleague, actor=actor_for(colleague))
        Channel.objects.create(workflow=first.workflow, name=f"lane-{n}", release=newer, baseline=first)
        members = [UserFactory(username=f"member-{n}-{m}") for m in range(2)]
        team = team_create(
            slug=f"team-{n}", name=f"Team {n}", members=members, actor=actor_for(platform_user)
        )
        agent_register(
            slug=f"bot-{n}", display_name=f"Bot {n}", owner_team=team, actor=actor_for(platform_user)
        )

    assert counts() == few
    assert len(api.get("/api/v1/releases").json()["results"]) == 5
    assert len(api.get("/api/v1/artifacts/prompt/triage").json()["results"]) == 5
    teams = {team["slug"]: team["members"] for team in api.get("/api/v1/teams").json()}
    assert sorted(teams["team-3"]) == ["member-3-0", "member-3-1"]
