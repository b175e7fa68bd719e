from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from controlplane.identity import Actor, api_key_authenticate, api_key_issue, api_key_revoke, hash_key
from controlplane.models import ApiKey, AuditEvent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor("tests", kind="system")


def test_key_is_stored_hashed_and_shown_once(requester):
    issued = api_key_issue(user=requester, name="ci", scopes=["runs:read"], issued_by=SYSTEM)

    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    assert issued.secret.startswith(f"baton_{stored.prefix}_")
    assert stored.key_hash == hash_key(issued.secret)
    assert issued.secret not in str(ApiKey.objects.values().get(pk=stored.pk))
    event = AuditEvent.objects.get(action="api_key.issued")
    assert issued.secret not in str(event.payload)
    assert event.payload["scopes"] == ["runs:read"]


def test_authentication_accepts_only_usable_keys(requester):
    good = api_key_issue(user=requester, name="good", issued_by=SYSTEM)
    expired = api_key_issue(user=requester, name="old", expires_in=timedelta(seconds=-1), issued_by=SYSTEM)
    revoked = api_key_issue(user=requester, name="gone", issued_by=SYSTEM)
    api_key_revoke(api_key=revoked.api_key, revoked_by=SYSTEM)

    assert api_key_authenticate(good.secret) == good.api_key
    assert api_key_authenticate(expired.secret) is None
    assert api_key_authenticate(revoked.secret) is None
    assert api_key_authenticate(good.secret + "x") is None
    assert api_key_authenticate("not-a-key") is None
    requester.is_active = False
    requester.save()
    assert api_key_authenticate(good.secret) is None


def test_unknown_scope_is_refused(requester):
    with pytest.raises(ValueError, match="unknown scope"):
        api_key_issue(user=requester, name="x", scopes=["everything"], issued_by=SYSTEM)
    assert not ApiKey.objects.exists()


def test_create_api_key_command_prints_the_key_once(capsys):
    UserFactory(username="svc")
    call_command(
        "create_api_key", "svc", "--scope", "runs:read", "--scope", "tasks:write", "--expires-days", "7"
    )
    captured = capsys.readouterr()
    raw_key = captured.out.strip()

    api_key = api_key_authenticate(raw_key)
    assert api_key.user.username == "svc"
    assert api_key.scopes == ["runs:read", "tasks:write"]
    assert timezone.now() + timedelta(days=6) < api_key.expires_at < timezone.now() + timedelta(days=8)
    assert raw_key not in captured.err
    assert "shown once" in captured.err


def test_create_api_key_command_rejects_unknown_user_and_bad_expiry():
    UserFactory(username="svc")
    with pytest.raises(CommandError, match="No active user"):
        call_command("create_api_key", "nobody")
    with pytest.raises(CommandError, match="positive"):
        call_command("create_api_key", "svc", "--expires-days", "0")
    with pytest.raises(CommandError, match="at most 36500"):
        call_command("create_api_key", "svc", "--expires-days", "1000000000")
    assert not ApiKey.objects.exists()


def test_bearer_key_authenticates_api_requests(api_client, requester, client_for):
    assert api_client.get("/api/v1/runs").status_code == 401
    assert api_client.get("/api/v1/runs").headers["WWW-Authenticate"].startswith("Bearer")
    api_client.credentials(HTTP_AUTHORIZATION="Bearer baton_nope_nope")
    response = api_client.get("/api/v1/runs")
    assert response.status_code == 401
    assert response.json()["type"] == "urn:baton:problem:not-authenticated"

    assert client_for(requester).get("/api/v1/runs").status_code == 200


def test_key_scopes_narrow_what_the_user_may_do(requester, client_for):
    read_only = client_for(requester, scopes=["runs:read"])
    response = read_only.post(
        "/api/v1/tasks", {"workflow": "builtin.intake", "case_id": "C", "input": {}}, format="json"
    )
    assert response.status_code == 403
    assert "tasks:write" in response.json()["detail"]


def test_login_page_signs_users_in(client):
    UserFactory(username="reviewer")
    page = client.get("/login/")
    assert page.status_code == 200
    assert b"Sign in to Baton" in page.content
    assert b"csrfmiddlewaretoken" in page.content

    failed = client.post("/login/", {"username": "reviewer", "password": "wrong"})
    assert b"did not match" in failed.content

    response = client.post("/login/", {"username": "reviewer", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_pages_require_login(client):
    response = client.get("/runs/")
    assert response.status_code == 302
    assert response.url.startswith("/login/")
