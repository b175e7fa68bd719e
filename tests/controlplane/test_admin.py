import pytest
from django.contrib import admin
from django.contrib.auth.models import Group

from controlplane.models import ApiKey, AuditEvent
from registry.models import Agent, Artifact, Release
from runs.models import Run

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", [AuditEvent, Artifact, Release, Agent, Run])
def test_admin_shows_but_never_edits_audited_history(client, admin_user, model):
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    model_admin = admin.site._registry[model]
    request = type("Request", (), {"user": admin_user})()

    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    assert client.get(url).status_code == 200


def test_api_keys_are_revoked_through_the_audited_service(client, admin_user, requester, client_for):
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    client_for(requester)
    key = ApiKey.objects.get()
    client.force_login(admin_user)

    response = client.post("/admin/controlplane/apikey/", {"action": "revoke", "_selected_action": [key.pk]})

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEvent.objects.filter(action="api_key.revoked").count() == 1


def test_an_api_key_cannot_be_edited_in_the_admin(client, admin_user, requester, client_for):
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    client_for(requester)
    key = ApiKey.objects.get()
    change_url = f"/admin/controlplane/apikey/{key.pk}/change/"
    client.force_login(admin_user)
    client.post("/admin/controlplane/apikey/", {"action": "revoke", "_selected_action": [key.pk]})

    response = client.post(change_url, {"name": key.name, "scopes": '["audit:read"]', "revoked_at": ""})

    assert response.status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is not None and "audit:read" not in key.scopes
    assert client.get(change_url).status_code == 200  # still shown, read-only


def test_role_grants_in_the_admin_are_audited(client, admin_user, requester):
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    reviewers = Group.objects.get_or_create(name="reviewer")[0]
    form = {
        "username": requester.username,
        "is_active": "on",
        "is_superuser": "on",
        "groups": [reviewers.pk],
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
    }

    response = client.post(f"/admin/auth/user/{requester.pk}/change/", form)

    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="user.changed")
    assert event.actor == f"user:{admin_user.username}" and event.object_id == str(requester.pk)
    assert event.payload["groups"] == ["reviewer"] and event.payload["is_superuser"] is True
    assert {"Groups", "Superuser status"} <= set(event.payload["changed"])

    client.post("/admin/auth/group/add/", {"name": "auditors-emea"})
    created = AuditEvent.objects.get(action="group.created")
    assert created.payload == {"name": "auditors-emea", "permissions": []}
