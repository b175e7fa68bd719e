"""/api/v1: each app contributes its own urls module."""

from django.urls import include, path

from . import views

urlpatterns = [
    path("audit/verify", views.AuditVerifyView.as_view(), name="api-audit-verify"),
    path("", include("registry.api.urls")),
    path("", include("policy.api.urls")),
    path("", include("runs.api.urls")),
    path("", include("approvals.api.urls")),
    path("", include("replays.api.urls")),
    path("", include("evidence.api.urls")),
]
