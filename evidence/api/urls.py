from django.urls import path

from . import views

urlpatterns = [
    path("evidence", views.EvidenceView.as_view(), name="api-evidence"),
    path("evidence/public-key", views.EvidenceKeyView.as_view(), name="api-evidence-key"),
    path("audit/status", views.LedgerStatusView.as_view(), name="api-audit-status"),
]
