"""Read queries for runs, always restricted to what the caller may see."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from controlplane.identity import ADMIN, AUDITOR, PLATFORM, has_role
from controlplane.models import AuditEvent

from .models import Run


def runs_visible_to(user: AbstractBaseUser) -> QuerySet[Run]:
    """Operators and auditors see every run; everyone else sees the runs they requested."""
    runs = Run.objects.select_related("requested_by")
    if not user.is_authenticated:
        return runs.none()
    if has_role(user, PLATFORM, AUDITOR, ADMIN):
        return runs
    return runs.filter(requested_by=user)


def run_events(run: Run) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(run_id=str(run.pk)).order_by("seq")
