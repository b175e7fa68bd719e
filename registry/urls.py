from django.urls import path
from django.views.generic import RedirectView

from . import views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="registry-agent-list"), name="registry-home"),
    path("agents/", views.agent_list, name="registry-agent-list"),
    path("new-agent/", views.agent_register, name="registry-agent-register"),
    path("agents/<str:slug>/", views.agent_detail, name="registry-agent-detail"),
    path("agents/<str:slug>/edit/", views.agent_edit, name="registry-agent-edit"),
    path("agents/<str:slug>/lifecycle/", views.agent_lifecycle, name="registry-agent-lifecycle"),
    path("releases/", views.release_list, name="registry-release-list"),
    path("releases/diff/", views.release_diff, name="registry-release-diff"),
    path("releases/<str:release_id>/", views.release_detail, name="registry-release-detail"),
    path("releases/<str:release_id>/sign-off/", views.release_sign_off, name="registry-release-sign-off"),
    path("releases/<str:release_id>/promote/", views.release_promote, name="registry-release-promote"),
    path(
        "releases/<str:release_id>/channels/<str:channel>/rollback/",
        views.channel_rollback,
        name="registry-channel-rollback",
    ),
    path("artifacts/", views.artifact_list, name="registry-artifact-list"),
    path("artifacts/<str:kind>/<str:name>/", views.artifact_history, name="registry-artifact-history"),
]
