"""/metrics sits at the root, where Prometheus looks for it."""

from django.urls import path

from . import views

urlpatterns = [path("metrics", views.metrics, name="metrics")]
