from django.urls import path

from . import views

urlpatterns = [
    path("", views.evidence_home, name="evidence-home"),
    path("exports", views.export_create, name="evidence-export-create"),
    path("exports/list", views.export_list, name="evidence-export-list"),
    path("exports/<int:pk>/download", views.export_download, name="evidence-export-download"),
    path("ledger", views.ledger, name="evidence-ledger"),
]
