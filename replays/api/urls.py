from django.urls import path

from . import views

urlpatterns = [
    path("runs/<uuid:pk>/replay", views.RunReplayView.as_view(), name="api-run-replay"),
    path("replays", views.ReplayListView.as_view(), name="api-replay-list"),
    path("replays/<int:pk>", views.ReplayDetailView.as_view(), name="api-replay-detail"),
    path("releases/<str:pk>/replay", views.ReleaseReplayBatchView.as_view(), name="api-release-replay"),
    path("replay-batches/<int:pk>", views.ReplayBatchDetailView.as_view(), name="api-replay-batch-detail"),
]
