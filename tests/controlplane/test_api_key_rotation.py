"""Rotating an API key from the command line: issue the successor, then revoke the old key."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.identity import api_key_authenticate
from controlplane.models import ApiKey, AuditEvent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def issue(capsys, username: str) -> str:
    call_command("create_api_key", username, "--scope", "runs:read")
    return capsys.readouterr().out.strip()


def test_a_key_is_rotated_by_issuing_its_successor_and_revoking_it_by_prefix(capsys):
    UserFactory(username="svc")
    old, new = issue(capsys, "svc"), issue(capsys, "svc")
    prefix = api_key_authenticate(old).prefix

    call_command("revoke_api_key", prefix)

    assert f"API key {prefix} of svc revoked" in capsys.readouterr().err
    assert api_key_authenticate(old) is None
    assert api_key_authenticate(new) is not None
    event = AuditEvent.objects.get(action="api_key.revoked")
    assert (event.actor, event.object_id) == ("system:cli", str(ApiKey.objects.get(prefix=prefix).pk))


def test_revoking_twice_says_so_and_records_one_revocation(capsys):
    UserFactory(username="svc")
    prefix = api_key_authenticate(issue(capsys, "svc")).prefix
    call_command("revoke_api_key", prefix)
    call_command("revoke_api_key", prefix)
    assert "already revoked" in capsys.readouterr().err
    assert AuditEvent.objects.filter(action="api_key.revoked").count() == 1


def test_an_unknown_prefix_is_an_error():
    with pytest.raises(CommandError, match="No API key with prefix 'deadbeef'"):
        call_command("revoke_api_key", "deadbeef")
