"""/api/v1/approvals: the caller's view of approval requests and their decisions."""

urlpatterns = []
