from django.urls import path

from . import views

urlpatterns = [
    path("", views.console, name="replay-console"),
    path("runs/<uuid:run_id>", views.run_replay, name="replay-run"),
    path("batches", views.batch_create, name="replay-batch-create"),
    path("batches/<int:pk>", views.batch_detail, name="replay-batch"),
    path("<int:pk>", views.replay_detail, name="replay-detail"),
]
