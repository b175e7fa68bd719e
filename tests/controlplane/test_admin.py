import pytest
from django.contrib import admin

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
