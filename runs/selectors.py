"""Read queries for runs, always restricted to what the caller may see."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from controlplane.identity import ADMIN, AUDITOR, PLATFORM, has_role
from controlplane.models import AuditEvent

from .models import Payload, Run


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


def stored_payloads(values: list[Any]) -> dict[str, Any]:
    """The content of every stored payload `values` refer to, by digest, in one query."""
    refs = [value["$ref"] for value in values if Payload.is_reference(value)]
    if not refs:
        return {}
    return dict(Payload.objects.filter(pk__in=refs).values_list("digest", "content"))


def inlined(value: Any, stored: dict[str, Any]) -> Any:
    """`value` with a reference replaced by its stored content (from `stored_payloads`)."""
    return stored.get(value["$ref"], value) if Payload.is_reference(value) else value
