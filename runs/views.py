"""Run pages: the run list, one run's story and the dead-letter queue; operators cancel and retry.

Everything a model or a tool wrote (outputs, proposed actions, errors) is untrusted text: it is
rendered as JSON or plain text and always escaped by the templates.
"""

import json
from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from controlplane.dbtime import database_now_plus
from controlplane.htmx import render_page
from controlplane.identity import ADMIN, AUDITOR, PLATFORM, actor_for, has_role
from controlplane.pages import ServiceForm, done, paged, roles_required
from controlplane.strict_json import StrictJSONError, strict_loads
from registry.diagrams import mermaid_state_diagram
from registry.models import Release, ReleaseAgent

from . import selectors
from .engine.released import released_workflow
from .models import Effect, MapBranch, Payload, PendingAction, Run, StepCheckpoint
from .services import run_cancel, run_discard, run_retry
from .services.operations import CANCELLABLE, DEAD_LETTERS, RETRYABLE
from .workflows import BUILTIN_WORKFLOWS

AGES = {"hour": ("last hour", 3600), "day": ("last day", 86_400), "week": ("last week", 7 * 86_400)}


class CancelForm(ServiceForm):
    reason = forms.CharField(required=False, max_length=2000)


class RetryForm(ServiceForm):
    repaired_input = forms.CharField(
        required=False,
        label="Repaired input (JSON object)",
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="Leave it empty to retry with the run's input as it is.",
    )
    reason = forms.CharField(required=False, max_length=2000)

    def clean_repaired_input(self) -> dict | None:
        text = self.cleaned_data["repaired_input"]
        if not text:
            return None
        try:
            value = strict_loads(text)
        except StrictJSONError as error:
            raise forms.ValidationError(f"This is not valid JSON: {error}.") from error
        if not isinstance(value, dict):
            raise forms.ValidationError('The repaired input must be a JSON object, such as {"text": "…"}.')
        return value


def _json(value: Any) -> str:
    """Readable JSON; the template escapes it like any other text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _workflow_names() -> list[str]:
    return sorted({*BUILTIN_WORKFLOWS, *Release.objects.values_list("workflow", flat=True).distinct()})


def _release_matches(typed: str) -> Q:
    """Runs of the release with this id, or whose id starts so (`rel_` may be left out). A whole
    id is matched exactly, which the release index answers: the links pass whole ids, and the
    filtered rows refresh every 3 seconds."""
    typed, known = typed.lower(), Release.ID_PREFIX
    prefix = typed if typed.startswith(known) or known.startswith(typed) else f"{known}{typed}"
    if Release.ID_PATTERN.fullmatch(prefix):
        return Q(release_id=prefix)
    return Q(release_id__startswith=prefix)


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    filters = {
        key: request.GET.get(key, "").strip() for key in ("status", "workflow", "release", "age", "agent")
    }
    runs = selectors.runs_visible_to(request.user)
    if filters["status"] in Run.Status.values:
        runs = runs.filter(status=filters["status"])
    if filters["workflow"]:
        runs = runs.filter(workflow=filters["workflow"])
    if filters["release"]:
        runs = runs.filter(_release_matches(filters["release"]))
    if filters["agent"]:
        runs = runs.filter(
            release_id__in=ReleaseAgent.objects.filter(agent__slug=filters["agent"]).values("release_id")
        )
    if filters["age"] in AGES:
        runs = runs.filter(created_at__gte=database_now_plus(-AGES[filters["age"]][1]))
    context = {
        "page": paged(request, runs.order_by("-created_at", "-pk")),
        "statuses": Run.Status.choices,
        # A callable: only the whole page calls it, not the rows' refresh every 3 seconds.
        "workflows": _workflow_names,
        "ages": [(key, label) for key, (label, _) in AGES.items()],
        "filters": filters,
    }
    return render_page(request, "runs/run_list.html", "runs/_partials/run_rows.html", context)


def _run_or_404(request: HttpRequest, pk: str) -> Run:
    runs = selectors.runs_visible_to(request.user).prefetch_related(
        Prefetch("checkpoints", queryset=StepCheckpoint.objects.order_by("sequence")),
        Prefetch("effects", queryset=Effect.objects.order_by("created_at", "pk")),
        Prefetch("map_branches", queryset=MapBranch.objects.order_by("sequence", "index")),
        Prefetch(
            "pending_actions",
            queryset=PendingAction.objects.filter(status=PendingAction.Status.PENDING).order_by(
                "created_at", "pk"
            ),
            to_attr="pending",
        ),
    )
    return get_object_or_404(runs, pk=pk)


@login_required
def run_detail(request: HttpRequest, pk: str) -> HttpResponse:
    context = _run_context(request, _run_or_404(request, pk))
    return render_page(request, "runs/run_detail.html", "runs/_partials/run_body.html", context)


def _run_context(request: HttpRequest, run: Run, **failed_forms) -> dict:
    checkpoints = list(run.checkpoints.all())
    branches = list(run.map_branches.all())
    stored = selectors.stored_payloads(
        [checkpoint.output for checkpoint in checkpoints] + [b.output for b in branches]
    )
    return {
        "run": run,
        # A run parked after a failed compensation only moves when an operator acts here.
        "live": not run.is_finished and run.status != Run.Status.COMPENSATION_FAILED,
        "input_json": _json(run.input),
        "budget": _budget(run),
        "diagram": _diagram(run, checkpoints),
        "steps": [_step(checkpoint, stored) for checkpoint in checkpoints],
        "branches": [_branch(branch, stored) for branch in branches],
        "pending": [(action, _json(action.proposed_action)) for action in run.pending],
        "effects": [
            (effect, _json(effect.compensation_result) if effect.compensation_result is not None else "")
            for effect in run.effects.all()
        ],
        "events": selectors.run_events(run),
        "can_operate": has_role(request.user, PLATFORM, ADMIN),
        "can_read_decisions": has_role(request.user, PLATFORM, AUDITOR, ADMIN),
        "can_cancel": run.status in CANCELLABLE,
        "can_retry": run.status in RETRYABLE,
        "cancel_form": CancelForm(),
        "retry_form": RetryForm(),
        **failed_forms,
    }


def _budget(run: Run) -> list[tuple[str, Any, Any]]:
    """(what, spent, limit) for every limit and every kind of spending; a limit may be absent."""
    budget = run.budget if isinstance(run.budget, dict) else {}
    spent = run.spent if isinstance(run.spent, dict) else {}
    return [(key, spent.get(key, 0), budget.get(key)) for key in sorted({*budget, *spent})]


def _step(checkpoint: StepCheckpoint, stored: dict[str, Any]) -> dict:
    output = selectors.inlined(checkpoint.output, stored)
    by_reference = Payload.is_reference(checkpoint.output)
    details = checkpoint.details if isinstance(checkpoint.details, dict) else {}
    decision = details.get("policy_decision")
    return {
        "checkpoint": checkpoint,
        "details": details,
        "fallbacks": details.get("fallbacks") or [],
        "decision_id": decision if isinstance(decision, int) and not isinstance(decision, bool) else None,
        "output_json": _json(output),
        "by_reference": by_reference,
    }


def _branch(branch: MapBranch, stored: dict[str, Any]) -> dict:
    output = selectors.inlined(branch.output, stored)
    by_reference = Payload.is_reference(branch.output)
    details = branch.details if isinstance(branch.details, dict) else {}
    return {
        "branch": branch,
        "details": details,
        "item_json": _json(branch.item),
        "output_json": _json(output) if branch.output is not None else "",
        "by_reference": by_reference,
    }


def _diagram(run: Run, checkpoints: list[StepCheckpoint]) -> str:
    """The released workflow with the states this run has completed highlighted; built-ins have none."""
    if not run.release_id:
        return ""
    try:
        definition = released_workflow(run.release_id).definition
    except Release.DoesNotExist:
        return ""
    return mermaid_state_diagram(definition, highlight=[checkpoint.state for checkpoint in checkpoints])


def _run_page(request: HttpRequest, pk: str, status: int, **failed_forms) -> HttpResponse:
    run = _run_or_404(request, pk)
    return render(request, "runs/run_detail.html", _run_context(request, run, **failed_forms), status=status)


@roles_required(PLATFORM, ADMIN)
@require_POST
def run_cancel_view(request: HttpRequest, pk: str) -> HttpResponse:
    run = get_object_or_404(selectors.runs_visible_to(request.user), pk=pk)
    form = CancelForm(request.POST)
    if form.submit(lambda data: run_cancel(run=run, actor=actor_for(request.user), reason=data["reason"])):
        return done(request, reverse("run-detail", args=[run.pk]), f"Run {_short(run)} is cancelled.")
    return _run_page(request, pk, form.status_code, cancel_form=form)


@roles_required(PLATFORM, ADMIN)
@require_POST
def run_retry_view(request: HttpRequest, pk: str) -> HttpResponse:
    run = get_object_or_404(selectors.runs_visible_to(request.user), pk=pk)
    form = RetryForm(request.POST)
    if form.submit(lambda data: run_retry(run=run, actor=actor_for(request.user), **data)):
        return done(request, reverse("run-detail", args=[run.pk]), f"Run {_short(run)} is queued again.")
    return _run_page(request, pk, form.status_code, retry_form=form)


def _short(run: Run) -> str:
    return str(run.pk)[:8]


def _dead_letters(request: HttpRequest) -> QuerySet[Run]:
    return (
        selectors.runs_visible_to(request.user).filter(status__in=DEAD_LETTERS).order_by("-created_at", "-pk")
    )


@login_required
def dead_letter_list(request: HttpRequest) -> HttpResponse:
    return _dead_letter_page(request)


def _dead_letter_page(
    request: HttpRequest, status: int = 200, failed: Run | None = None, **failed_forms
) -> HttpResponse:
    context = {
        "page": paged(request, _dead_letters(request)),
        "can_operate": has_role(request.user, PLATFORM, ADMIN),
        "failed": failed,
        "cancel_form": CancelForm(),
        "retry_form": RetryForm(),
        **failed_forms,
    }
    return render(request, "runs/dead_letter_list.html", context, status=status)


@roles_required(PLATFORM, ADMIN)
@require_POST
def dead_letter_retry(request: HttpRequest, pk: str) -> HttpResponse:
    # Any run the user sees: if it has left the queue meanwhile, the service explains why (409).
    run = get_object_or_404(selectors.runs_visible_to(request.user), pk=pk)
    form = RetryForm(request.POST)
    if form.submit(lambda data: run_retry(run=run, actor=actor_for(request.user), **data)):
        return done(request, reverse("dead-letter-list"), f"Run {_short(run)} is queued again.")
    return _dead_letter_page(request, form.status_code, failed=run, retry_form=form)


@roles_required(PLATFORM, ADMIN)
@require_POST
def dead_letter_discard(request: HttpRequest, pk: str) -> HttpResponse:
    # Any run the user sees: if it has left the queue meanwhile, the service explains why (409).
    run = get_object_or_404(selectors.runs_visible_to(request.user), pk=pk)
    form = CancelForm(request.POST)
    if form.submit(lambda data: run_discard(run=run, actor=actor_for(request.user), reason=data["reason"])):
        return done(request, reverse("dead-letter-list"), f"Run {_short(run)} is discarded (cancelled).")
    return _dead_letter_page(request, form.status_code, failed=run, cancel_form=form)
