"""/api/v1/approvals: the caller's view of approval requests and their decisions."""

from django.urls import path

from . import views

urlpatterns = [
    path("approvals", views.ApprovalListView.as_view(), name="api-approval-list"),
    path("approvals/<int:pk>", views.ApprovalDetailView.as_view(), name="api-approval-detail"),
    path("approvals/<int:pk>/decision", views.ApprovalDecisionView.as_view(), name="api-approval-decision"),
]
