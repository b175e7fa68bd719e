"""API keys revoked twice at the same moment (two admins, or the admin page and the command)."""

import pytest
from django.db import connection

from controlplane.identity import Actor, api_key_issue, api_key_revoke
from controlplane.models import ApiKey, AuditEvent
from tests.factories import UserFactory
from tests.integration.races import overlapping, twice

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent connections are what is tested"),
]
ADMIN = Actor("admin")


@pytest.fixture
def key_id(db) -> int:
    user = UserFactory(username="client")
    return api_key_issue(user=user, name="ci", issued_by=ADMIN).api_key.pk


def revoke(key_id: int):
    """What the admin page does: read the key, then revoke it."""
    return lambda: api_key_revoke(api_key=ApiKey.objects.get(pk=key_id), revoked_by=ADMIN)


@pytest.mark.parametrize("at_the_same_moment", [twice, lambda call: overlapping(call, call)])
def test_a_key_revoked_twice_at_once_is_revoked_and_audited_once(key_id, at_the_same_moment):
    outcomes = at_the_same_moment(revoke(key_id))
    assert all(isinstance(outcome, ApiKey) for outcome in outcomes), outcomes
    revoked_at = ApiKey.objects.get(pk=key_id).revoked_at
    assert {outcome.revoked_at for outcome in outcomes} == {revoked_at}
    assert AuditEvent.objects.filter(action="api_key.revoked").count() == 1
