"""Reviewer pages: the approval inbox and the approval history."""

urlpatterns = []
