from django.urls import path

from . import views

urlpatterns = [
    path("teams", views.TeamListView.as_view(), name="api-team-list"),
    path("agents", views.AgentListView.as_view(), name="api-agent-list"),
    path("agents/<slug:slug>", views.AgentDetailView.as_view(), name="api-agent-detail"),
    path("agents/<slug:slug>/lifecycle", views.AgentLifecycleView.as_view(), name="api-agent-lifecycle"),
    path("agents/<slug:slug>/keys", views.AgentKeyView.as_view(), name="api-agent-keys"),
    path("artifacts/<str:kind>", views.ArtifactListView.as_view(), name="api-artifact-list"),
    path(
        "artifacts/<str:kind>/<str:name>", views.ArtifactVersionsView.as_view(), name="api-artifact-versions"
    ),
    path(
        "artifacts/<str:kind>/<str:name>/<int:version>",
        views.ArtifactVersionView.as_view(),
        name="api-artifact-version",
    ),
    path("releases", views.ReleaseListView.as_view(), name="api-release-list"),
    path("releases/<str:pk>", views.ReleaseDetailView.as_view(), name="api-release-detail"),
    path(
        "releases/<str:pk>/evaluations", views.ReleaseEvaluationView.as_view(), name="api-release-evaluations"
    ),
    path("releases/<str:pk>/signoffs", views.ReleaseSignOffView.as_view(), name="api-release-signoffs"),
    path("releases/<str:pk>/promote", views.ReleasePromoteView.as_view(), name="api-release-promote"),
    path("releases/<str:pk>/diff", views.ReleaseDiffView.as_view(), name="api-release-diff"),
    path("channels", views.ChannelListView.as_view(), name="api-channel-list"),
    path(
        "channels/<str:workflow>/<str:name>/rollback",
        views.ChannelRollbackView.as_view(),
        name="api-channel-rollback",
    ),
]
