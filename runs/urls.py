from django.urls import path

from . import views

urlpatterns = [
    path("", views.run_list, name="run-list"),
    path("dead-letters/", views.dead_letter_list, name="dead-letter-list"),
    path("dead-letters/<uuid:pk>/retry/", views.dead_letter_retry, name="dead-letter-retry"),
    path("dead-letters/<uuid:pk>/discard/", views.dead_letter_discard, name="dead-letter-discard"),
    path("<uuid:pk>/", views.run_detail, name="run-detail"),
    path("<uuid:pk>/cancel/", views.run_cancel_view, name="run-cancel"),
    path("<uuid:pk>/retry/", views.run_retry_view, name="run-retry"),
]
