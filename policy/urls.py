from django.urls import path
from django.views.generic import RedirectView

from . import views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="policy-decision-list"), name="policy-home"),
    path("decisions/", views.decision_list, name="policy-decision-list"),
    path("decisions/<int:pk>/", views.decision_detail, name="policy-decision-detail"),
    path("impact/", views.impact, name="policy-impact"),
]
