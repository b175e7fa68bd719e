import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.compiled import compiled_once
from registry.models import Agent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_rows_are_the_querysets_converted_and_current_while_the_statement_is_built_once():
    builds = []

    @compiled_once
    def tools_of(slug: str):
        builds.append(slug)
        return Agent.objects.filter(slug=slug).values_list("slug", "allowed_tools", "created_at")

    owner = UserFactory(username="svc-reader")
    agent = Agent.objects.create(
        slug="reader", service_user=owner, allowed_tools=[{"tool": "kb.search", "scope": "read"}]
    )
    expected = list(Agent.objects.filter(slug="reader").values_list("slug", "allowed_tools", "created_at"))
    assert tools_of("reader") == expected
    assert tools_of("reader")[0][1] == [{"tool": "kb.search", "scope": "read"}]  # JSON decoded
    # The rows are read each time: a change shows at once; only the statement is kept.
    Agent.objects.filter(pk=agent.pk).update(allowed_tools=[])
    with CaptureQueriesContext(connection) as queries:
        assert tools_of("reader")[0][1] == []
    assert len(queries) == 1
    assert tools_of("nobody") == []
    assert builds == ["reader", "nobody"]


def test_rows_without_conversions_come_as_the_database_gives_them():
    @compiled_once
    def names(user_id: int):
        return get_user_model().objects.filter(pk=user_id).values_list("groups__name")

    user = UserFactory(username="grouped")
    user.groups.add(Group.objects.create(name="readers"))
    assert names(user.pk) == [("readers",)]
