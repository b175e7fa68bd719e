from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from controlplane.htmx import render_page

from . import selectors
from .models import Run, StepCheckpoint
from .workflows import BUILTIN_WORKFLOWS

RUNS_PER_PAGE = 50


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    runs = selectors.runs_visible_to(request.user)
    status = request.GET.get("status", "")
    workflow = request.GET.get("workflow", "")
    if status in Run.Status.values:
        runs = runs.filter(status=status)
    if workflow:
        runs = runs.filter(workflow=workflow)
    page = Paginator(runs.order_by("-created_at", "-pk"), RUNS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "statuses": Run.Status.choices,
        "workflows": sorted(BUILTIN_WORKFLOWS),
        "filters": {"status": status, "workflow": workflow},
    }
    return render_page(request, "runs/run_list.html", "runs/_partials/run_rows.html", context)


@login_required
def run_detail(request: HttpRequest, pk: str) -> HttpResponse:
    runs = selectors.runs_visible_to(request.user).prefetch_related(
        Prefetch("checkpoints", queryset=StepCheckpoint.objects.order_by("sequence"))
    )
    run = get_object_or_404(runs, pk=pk)
    context = {"run": run, "events": selectors.run_events(run)}
    return render_page(request, "runs/run_detail.html", "runs/_partials/run_body.html", context)
