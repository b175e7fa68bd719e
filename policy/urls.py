from django.urls import path

from . import views

urlpatterns = [
    path("decisions/", views.decision_list, name="policy-decision-list"),
    path("decisions/<int:pk>/", views.decision_detail, name="policy-decision-detail"),
    path("impact/", views.impact, name="policy-impact"),
]
