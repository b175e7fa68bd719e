from django.urls import path

from . import views

urlpatterns = [
    path("tasks", views.TaskSubmitView.as_view(), name="api-task-submit"),
    path("runs", views.RunListView.as_view(), name="api-run-list"),
    path("runs/<uuid:pk>", views.RunDetailView.as_view(), name="api-run-detail"),
    path("runs/<uuid:pk>/events", views.RunEventsView.as_view(), name="api-run-events"),
    path("runs/<uuid:pk>/cancel", views.RunCancelView.as_view(), name="api-run-cancel"),
    path("runs/<uuid:pk>/retry", views.RunRetryView.as_view(), name="api-run-retry"),
]
