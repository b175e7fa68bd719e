"""The inbox and history filters, and the decision form a reviewer posts."""

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta

from django import forms
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from controlplane.dbtime import database_now_plus
from controlplane.pages import ServiceForm
from runs.models import PendingAction

from .models import ApprovalDecision
from .services import REASON_MAX

SENSITIVITIES = [(name, name) for name in PendingAction.SENSITIVITY_RANKS]
RISKS = [(risk.label, risk.label) for risk in PendingAction.Risk]
# (label, seconds, waiting longer than that?)
WAITING = {
    "lt_hour": ("less than an hour", 3600, False),
    "gt_hour": ("more than an hour", 3600, True),
    "gt_day": ("more than a day", 86_400, True),
    "gt_week": ("more than a week", 7 * 86_400, True),
}
WAITING_CHOICES = [(key, label) for key, (label, *_) in WAITING.items()]
# Each order is served by one of the inbox indexes on PendingAction.
SORTS = {
    "due": ("due time", ("due_at", "pk")),
    "risk": ("risk", ("-risk_rank", "due_at", "pk")),
    "newest": ("newest", ("-created_at", "-pk")),
}
SORT_CHOICES = [(key, label) for key, (label, _) in SORTS.items()]


class OptionalChoice(forms.CharField):
    """A filter's choice from the query string: any other value means no choice (never an
    error). Lighter than ChoiceField, which the form copies with its choices on every request."""

    def __init__(self, choices: list[tuple[str, str]], **kwargs) -> None:
        super().__init__(required=False, **kwargs)
        self.values = frozenset(value for value, _ in choices)

    def clean(self, value: str) -> str:
        value = super().clean(value)
        return value if value in self.values else ""


class FilterForm(forms.Form):
    """Filters read from the query string: a value that is not a choice is ignored, never an error."""

    @property
    def chosen(self) -> dict:
        """The valid filters (what the page shows as selected)."""
        self.is_valid()
        return self.cleaned_data

    @property
    def active(self) -> bool:
        return any(value for name, value in self.chosen.items() if name != "sort")


class InboxFilters(FilterForm):
    workflow = forms.CharField(required=False, max_length=200)
    risk = OptionalChoice(RISKS)
    sensitivity = OptionalChoice(SENSITIVITIES)
    waiting = OptionalChoice(WAITING_CHOICES)
    sort = OptionalChoice(SORT_CHOICES)

    @staticmethod
    def narrow(requests: QuerySet[PendingAction], data: Mapping[str, str]) -> QuerySet[PendingAction]:
        """`requests` narrowed and ordered by valid filters (a form's `chosen`)."""
        if data.get("workflow"):
            requests = requests.filter(workflow=data["workflow"])
        if data.get("risk"):
            requests = requests.filter(risk_rank=PendingAction.Risk[data["risk"].upper()])
        if data.get("sensitivity"):
            requests = requests.filter(sensitivity_rank=PendingAction.SENSITIVITY_RANKS[data["sensitivity"]])
        if data.get("waiting"):
            _, seconds, longer = WAITING[data["waiting"]]
            since = database_now_plus(-seconds)
            requests = (
                requests.filter(created_at__lte=since) if longer else requests.filter(created_at__gt=since)
            )
        return requests.order_by(*SORTS[data.get("sort") or "due"][1])


class HistoryFilters(FilterForm):
    status = OptionalChoice([c for c in PendingAction.Status.choices if c[0] != PendingAction.Status.PENDING])
    workflow = forms.CharField(required=False, max_length=200)
    reviewer = forms.CharField(required=False, max_length=150)
    decided_from = forms.DateField(required=False)
    decided_to = forms.DateField(required=False)

    def apply(self, requests: QuerySet[PendingAction]) -> QuerySet[PendingAction]:
        data = self.chosen
        if data.get("status"):
            requests = requests.filter(status=data["status"])
        if data.get("workflow"):
            requests = requests.filter(workflow=data["workflow"])
        if data.get("reviewer"):
            decided_by = ApprovalDecision.objects.filter(
                pending_action=OuterRef("pk"), reviewer__username=data["reviewer"]
            )
            requests = requests.filter(Exists(decided_by))
        # Whole days in the server's time zone, as ranges (an index can serve a range, not a date cast).
        if data.get("decided_from"):
            requests = requests.filter(decided_at__gte=_start_of(data["decided_from"]))
        # Before the start of the next day; the last day a date can hold has no next day, nor a bound.
        if data.get("decided_to") and data["decided_to"] < date.max:
            requests = requests.filter(decided_at__lt=_start_of(data["decided_to"] + timedelta(days=1)))
        return requests


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


class DecisionForm(ServiceForm):
    """Approve or reject; the service checks the reason (required to reject) and asks policy."""

    decision = forms.ChoiceField(choices=ApprovalDecision.Verdict.choices)
    reason = forms.CharField(required=False, max_length=REASON_MAX, strip=True)
