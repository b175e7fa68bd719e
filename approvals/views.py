"""Reviewer pages: the approval inbox (a list beside a detail panel), decisions, the history.

Everything a model or a tool wrote (the input, step outputs, the proposed action's arguments)
is untrusted text: it is rendered as JSON or plain text, always escaped by the templates. The
inbox, its live count and the history are each a constant number of queries, however many
requests wait.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache, wraps
from html import escape
from typing import Any

from django.db.models import BooleanField, ExpressionWrapper, Prefetch, Q, QuerySet
from django.db.models.functions import Now
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince
from django.utils.translation import get_language
from django.views.decorators.http import require_POST

from controlplane.errors import NotFound
from controlplane.htmx import render_page, wants_fragment
from controlplane.identity import ADMIN, AUDITOR, PLATFORM, REVIEWER, has_role
from controlplane.pages import done, roles_required
from runs import selectors as runs_selectors
from runs.models import PendingAction, StepCheckpoint

from . import selectors
from .forms import (
    RISKS,
    SENSITIVITIES,
    SORT_CHOICES,
    WAITING_CHOICES,
    DecisionForm,
    HistoryFilters,
    InboxFilters,
)
from .models import ApprovalDecision
from .services import approval_decide

# Approver groups are role groups: reviewers first, platform and admins by escalation.
DECIDERS = (REVIEWER, PLATFORM, ADMIN)
READERS = (*DECIDERS, AUDITOR)
OVERDUE = ExpressionWrapper(Q(due_at__lte=Now()), output_field=BooleanField())
# The inbox is a work queue beside its detail panel: a screenful of rows, then the next page.
INBOX_PER_PAGE = 25
HISTORY_PER_PAGE = 50
MAX_PAGE = 10_000  # deep enough for any reader; a bigger OFFSET only costs the database
# What a row shows; the run's input and the rest load with the panel.
INBOX_COLUMNS = (
    *("workflow", "state", "proposed_action", "approver_group", "quorum", "approvals", "risk_rank"),
    *("sensitivity_rank", "created_at", "due_at", "run__case_id", "requested_by__username"),
)
HISTORY_COLUMNS = (*INBOX_COLUMNS, "status", "escalations", "decided_at")
RISK_LABELS = dict(PendingAction.Risk.choices)
SENSITIVITY_NAMES = {rank: name for name, rank in PendingAction.SENSITIVITY_RANKS.items()}
FOUR_WEEKS = timedelta(weeks=4)
ONE_MINUTE = timedelta(minutes=1)
# One inbox row, filled with str.format, every value escaped by html.escape (what the template
# engine and format_html escape with): the rows are rendered every 10 seconds for every reviewer,
# and the engine costs several microseconds per variable, filter and tag, format_html one per
# value.
INBOX_ROW = """<tr class="approval-row" data-approval-id="{pk}" aria-selected="false">
      <td><a class="approval-open" href="{url}" hx-get="{url}?{next_query}" hx-target="#approval-panel" \
hx-swap="innerHTML">#{pk} {workflow}</a>
        <div class="muted">{case_id} · <code>{state}</code></div>
        <div class="muted">by {requested_by}, <time datetime="{created_at}">{waited}</time></div></td>
      <td>{action}
        <div class="muted">{approver_group}{quorum}</div></td>
      <td><span class="risk risk-{risk}">{risk}</span><div class="muted">{sensitivity}</div></td>
      <td>{due}</td>
    </tr>"""

# The navigation's count of waiting requests, on every page a decider opens and polled every 10
# seconds (a signed-out poll answers 204, which leaves it as it is): made here, not by a template.
NAV_COUNT = """<span id="approval-count" class="status {waiting}" \
title="{label} pending approval request{plural}"
      hx-get="{url}" hx-trigger="every 10s" hx-swap="outerHTML">{label}</span>"""


def _json(value: Any) -> str:
    """Readable JSON; the template escapes it like any other text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _reviewer_read_first(view: Callable) -> Callable:
    """Reads the signed-in user's groups and clearance before anything asks for their roles:
    that one query answers both (see `selectors.reviewer_of`)."""

    @wraps(view)
    def read_first(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.user.is_authenticated:
            selectors.reviewer_of(request.user)
        return view(request, *args, **kwargs)

    return read_first


@_reviewer_read_first
@roles_required(*DECIDERS)
def inbox(request: HttpRequest) -> HttpResponse:
    filters = InboxFilters(request.GET)
    whole_page = not wants_fragment(request)
    reviewer = selectors.reviewer_of(request.user)
    requests = _inbox_statement(
        request.user.pk,
        tuple(reviewer.groups),
        reviewer.clearance,
        reviewer.is_agent,
        tuple(sorted(filters.chosen.items())),
        whole_page,
    )
    page = _page_of(request, requests, INBOX_PER_PAGE)
    # Each row opens its panel with the way back to the inbox as it is now.
    next_query = escape(urlencode({"next": request.get_full_path()}))
    now, zone, inbox_url = timezone.now(), timezone.get_current_timezone(), reverse("approval-inbox")
    context = {
        "page": RowsPage(
            rows=[_inbox_row(values, now, zone, inbox_url, next_query) for values in page.rows],
            number=page.number,
            has_next=page.has_next,
        ),
        "inbox_url": inbox_url,
        "filters": filters,
        "chosen": filters.chosen,
        # A callable: only the whole page asks for it, not the rows' refresh every 10 seconds.
        "workflows": _workflow_choices,
        "risks": RISKS,
        "sensitivities": SENSITIVITIES,
        "waiting": WAITING_CHOICES,
        "sorts": SORT_CHOICES,
    }
    if whole_page and page.rows:  # no rows, no count: the navigation asks for it itself
        context["pending_count"] = page.rows[0]["pending_count"]
    return render_page(request, "approvals/inbox.html", "approvals/_partials/inbox_rows.html", context)


@selectors.built_once
def _inbox_statement(
    user_id: int,
    groups: tuple[str, ...],
    clearance: int,
    is_agent: bool,
    chosen: tuple[tuple[str, str], ...],
    whole_page: bool,
) -> QuerySet:
    """The inbox's rows of INBOX_COLUMNS (and, for the whole page, the navigation's count) for
    what is known of the user (other groups or clearance: another statement) and the filters
    chosen."""
    pending = selectors.pending_decidable_by(user_id, groups, clearance, is_agent)
    requests = InboxFilters.narrow(pending, dict(chosen))
    requests = requests.annotate(overdue=OVERDUE).values("pk", "overdue", *INBOX_COLUMNS)
    if whole_page:  # the navigation's count, read by the same statement as the rows
        requests = requests.annotate(pending_count=selectors.pending_count_of(pending))
    return requests


def _workflow_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in selectors.filterable_workflows()]


def _inbox_row(
    values: dict[str, Any], now: datetime, zone: tzinfo, inbox_url: str, next_query: str
) -> SafeString:
    """One inbox row from a `values()` row of INBOX_COLUMNS, every value escaped (`next_query`
    comes escaped)."""
    created_at, due_at = values["created_at"].astimezone(zone), values["due_at"]
    if values["overdue"]:
        due = f'<time datetime="{due_at.astimezone(zone).isoformat()}" class="overdue">overdue</time>'
    elif due_at:
        due = f'<time datetime="{due_at.astimezone(zone).isoformat()}">{_due_in(now, due_at)}</time>'
    else:
        due = "—"
    return mark_safe(  # noqa: S308 (each value below is escaped or made here of escaped parts)
        INBOX_ROW.format(
            pk=values["pk"],
            url=f"{inbox_url}{values['pk']}/",  # approval-detail, without a reverse() per row
            next_query=next_query,
            workflow=escape(values["workflow"]),
            case_id=escape(values["run__case_id"]),
            state=escape(values["state"]),
            action=_action_html(values["proposed_action"]),
            approver_group=escape(values["approver_group"]),
            quorum=f" · {values['approvals']} of {values['quorum']}" if values["quorum"] > 1 else "",
            risk=RISK_LABELS[values["risk_rank"]],
            sensitivity=SENSITIVITY_NAMES.get(values["sensitivity_rank"], ""),
            requested_by=escape(values["requested_by__username"] or "—"),
            created_at=created_at.isoformat(),
            waited=_waited(created_at, now),
            due=due,
        )
    )


def _waited(created_at: datetime, now: datetime) -> str:
    return "just now" if now - created_at < ONE_MINUTE else f"{_time_between(created_at, now)} ago"


def _due_in(now: datetime, due_at: datetime) -> str:
    return "in under a minute" if due_at - now < ONE_MINUTE else f"in {_time_between(now, due_at)}"


def _time_between(start: datetime, end: datetime) -> str:
    """`timesince(start, end)`: under four weeks its text depends on the number of whole minutes
    alone (months and years count from four weeks on), so it is made once per span. Every row
    asks for one or two on every refresh, and Django's costs several microseconds each."""
    span = end.astimezone(start.tzinfo) - start  # wall-clock time in start's zone, as timesince
    if span >= FOUR_WEEKS:
        return timesince(start, end)
    return _text_of_span(max(0, int(span.total_seconds() // 60)), get_language())


@lru_cache(maxsize=4096)
def _text_of_span(minutes: int, language: str) -> str:
    """The text of a span under four weeks, in `language` (the active one: part of the key)."""
    start = datetime(2001, 1, 1, tzinfo=UTC)
    return timesince(start, start + timedelta(minutes=minutes))


def _action_html(action: Any) -> str:
    """What the request would do: a tool call, a gate, or a hand-off to a human (escaped)."""
    action = action if isinstance(action, dict) else {}
    if action.get("tool"):
        return f"<code>{escape(str(action['tool']))}</code>"
    if action.get("gate"):
        return f"gate <code>{escape(str(action['gate']))}</code>"
    if action.get("handoff"):
        return f"hand-off from <code>{escape(str(action['handoff']))}</code>"
    return ""


@dataclass(frozen=True)
class RowsPage:
    """One page of a list, found without counting its rows: a count walks every pending request
    (the navigation shows that total) or the whole history."""

    rows: list[PendingAction]
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def _page_of(request: HttpRequest, requests: QuerySet[PendingAction], per_page: int) -> RowsPage:
    try:
        number = min(max(1, int(request.GET.get("page", "1"))), MAX_PAGE)
    except ValueError:
        number = 1
    start = (number - 1) * per_page
    rows = list(requests[start : start + per_page + 1])
    return RowsPage(rows=rows[:per_page], number=number, has_next=len(rows) > per_page)


def pending_count(request: HttpRequest) -> HttpResponse:
    """The navigation's live count (polled). Signed out: nothing to swap, rather than the login page."""
    if not request.user.is_authenticated or not has_role(request.user, *DECIDERS):
        return HttpResponse(status=204)
    return HttpResponse(nav_count(request.user, reverse("approval-count")))


def nav_count(user, poll_url: str, count: int | None = None) -> SafeString:
    """The navigation's count (read now unless given): "999+" past the cap (the count stops there)."""
    if count is None:
        count = selectors.pending_count_for(user)
    label = f"{selectors.PENDING_COUNT_CAP}+" if count > selectors.PENDING_COUNT_CAP else count
    return mark_safe(  # noqa: S308 (a number, a URL we reversed and fixed text)
        NAV_COUNT.format(
            waiting="status-waiting_approval" if count else "",
            label=label,
            plural="" if count == 1 else "s",
            url=poll_url,
        )
    )


def _request_or_404(request: HttpRequest, pk: int) -> PendingAction:
    try:
        return selectors.request_for(request.user, pk)
    except NotFound as error:
        raise Http404(error.detail) from error


@roles_required(*READERS)
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The detail panel (htmx, beside the list) or the whole page (without JavaScript)."""
    context = _panel_context(request, _request_or_404(request, pk))
    return render_page(request, "approvals/detail.html", "approvals/_partials/panel.html", context)


@_reviewer_read_first
@roles_required(*DECIDERS)
@require_POST
def request_decide(request: HttpRequest, pk: int) -> HttpResponse:
    form = DecisionForm(request.POST)
    # Whether the user may see the request is asked of the row the decision locks: the decision
    # path stays short (a run waits on it). One they may not see is not found.
    reviewer = selectors.reviewer_of(request.user)
    recorded = form.submit(
        lambda data: approval_decide(
            pending_action_id=pk, user=request.user, visible_only=True, reviewer=reviewer, **data
        )
    )
    if recorded is not None:
        return done(request, _back_to_inbox(request), _decided_message(recorded))
    # Refused or too late: the panel again, as it is now, with the reason why.
    context = _panel_context(request, _request_or_404(request, pk), decision_form=form)
    return render_page(
        request, "approvals/detail.html", "approvals/_partials/panel.html", context, status=form.status_code
    )


def _back_to_inbox(request: HttpRequest) -> str:
    """The inbox as the reviewer left it (filters and sort), never another site."""
    back = request.POST.get("next", "")
    inbox_url = reverse("approval-inbox")
    if back.startswith(inbox_url) and url_has_allowed_host_and_scheme(back, allowed_hosts=None):
        return back
    return inbox_url


def _decided_message(recorded: ApprovalDecision) -> str:
    pending = recorded.pending_action
    what = f"request #{pending.pk} ({pending.workflow}, {pending.state})"
    if pending.status == PendingAction.Status.APPROVED:
        return f"Approved {what}: the run resumes."
    if pending.status == PendingAction.Status.REJECTED:
        return f"Rejected {what}: the run follows its rejection path."
    return (
        f"Your approval of {what} is recorded ({pending.approvals} of {pending.quorum}); "
        f"it now waits for the {pending.approver_group} group."
    )


def _panel_context(request: HttpRequest, pending: PendingAction, **forms) -> dict:
    run = pending.run
    checkpoints = list(run.checkpoints.all())
    stored = runs_selectors.stored_payloads([checkpoint.output for checkpoint in checkpoints])
    user = request.user
    proposed = pending.proposed_action if isinstance(pending.proposed_action, dict) else {}
    return {
        "pending": pending,
        "run": run,
        "pending_open": pending.status == PendingAction.Status.PENDING,
        "can_decide": pending.status == PendingAction.Status.PENDING and has_role(user, *DECIDERS),
        "is_requester": pending.requested_by_id == user.pk,
        # The run moves on its own after a decision: follow it until it ends.
        "follow_run": pending.status == PendingAction.Status.APPROVED and not run.is_finished,
        "can_see_run": has_role(user, PLATFORM, AUDITOR, ADMIN) or run.requested_by_id == user.pk,
        "can_read_decisions": has_role(user, PLATFORM, AUDITOR, ADMIN),
        "tool": proposed.get("tool", ""),
        "arguments_json": _json(proposed.get("args", proposed)),
        "input_json": _json(run.input),
        "risk": pending.risk if isinstance(pending.risk, dict) else {},
        "steps": [_step(checkpoint, stored) for checkpoint in checkpoints],
        "decisions": list(pending.decisions.all()),
        "decision_form": DecisionForm(),
        "next": request.GET.get("next", ""),
        **forms,
    }


def _step(checkpoint: StepCheckpoint, stored: dict[str, Any]) -> dict:
    output = runs_selectors.inlined(checkpoint.output, stored)
    details = checkpoint.details if isinstance(checkpoint.details, dict) else {}
    return {"checkpoint": checkpoint, "details": details, "output_json": _json(output)}


@roles_required(*READERS)
def history(request: HttpRequest) -> HttpResponse:
    filters = HistoryFilters(request.GET)
    requests = (
        filters.apply(selectors.history_for(request.user))
        .only(*HISTORY_COLUMNS)
        .prefetch_related(Prefetch("decisions", queryset=ApprovalDecision.objects.select_related("reviewer")))
    )
    context = {
        "page": _page_of(request, requests, HISTORY_PER_PAGE),
        "filters": filters,
        "chosen": filters.chosen,
        "statuses": [c for c in PendingAction.Status.choices if c[0] != PendingAction.Status.PENDING],
        "can_decide_here": has_role(request.user, *DECIDERS),
    }
    return render_page(request, "approvals/history.html", "approvals/_partials/history_rows.html", context)
