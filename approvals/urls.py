"""Reviewer pages: the approval inbox and the approval history."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.inbox, name="approval-inbox"),
    path("count/", views.pending_count, name="approval-count"),
    path("history/", views.history, name="approval-history"),
    path("<int:pk>/", views.request_detail, name="approval-detail"),
    path("<int:pk>/decision/", views.request_decide, name="approval-decide"),
]
