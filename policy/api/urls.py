from django.urls import path

from . import views

urlpatterns = [
    path("policy/decisions", views.DecisionListView.as_view(), name="api-policy-decisions"),
    path("policy/decisions/<int:pk>", views.DecisionDetailView.as_view(), name="api-policy-decision"),
    path("policy/evaluate", views.EvaluateView.as_view(), name="api-policy-evaluate"),
    path("policy/impact", views.ImpactView.as_view(), name="api-policy-impact"),
]
