"""Admins set reviewers' clearances in the admin, through the audited service."""

import pytest

from approvals.models import ApprovalDecision, ReviewerClearance
from controlplane.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, admin_user):
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    return client


def test_an_admin_clears_a_reviewer_and_the_change_is_audited(admin_client, reviewer):
    response = admin_client.post("/admin/approvals/reviewerclearance/add/", {"user": reviewer.pk, "level": 2})
    assert response.status_code == 302
    assert ReviewerClearance.objects.get(user=reviewer).get_level_display() == "confidential"
    event = AuditEvent.objects.get(action="reviewer.clearance_set")
    assert event.actor == "user:admin" and event.payload == {
        "user": "reviewer",
        "from": "internal",
        "to": "confidential",
    }
    clearance = ReviewerClearance.objects.get(user=reviewer)
    response = admin_client.post(f"/admin/approvals/reviewerclearance/{clearance.pk}/change/", {"level": 3})
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="reviewer.clearance_set").last().payload["to"] == "restricted"


def test_decisions_are_shown_never_edited(admin_client):
    from django.contrib import admin

    model_admin = admin.site._registry[ApprovalDecision]
    request = type("Request", (), {"user": None})()
    assert not model_admin.has_change_permission(request) and not model_admin.has_delete_permission(request)
    assert admin_client.get("/admin/approvals/approvaldecision/").status_code == 200
    assert admin_client.get("/admin/approvals/reviewerclearance/").status_code == 200
