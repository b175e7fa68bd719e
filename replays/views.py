"""The replay console: replays of single runs, batch replays of releases, and their reports."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from controlplane.identity import ADMIN, AUDITOR, PLATFORM
from controlplane.pages import done, roles_required
from runs.selectors import runs_visible_to

from . import selectors, services
from .forms import ReplayBatchForm, ReplayForm

RECENT = 25


@roles_required(PLATFORM, AUDITOR, ADMIN)
def console(request: HttpRequest, form: ReplayBatchForm | None = None) -> HttpResponse:
    context = {
        "replays": selectors.replays()[:RECENT],
        "batches": selectors.batches()[:RECENT],
        "batch_form": form or ReplayBatchForm(),
    }
    return render(request, "replays/console.html", context, status=form.status_code if form else 200)


@roles_required(PLATFORM, AUDITOR, ADMIN)
def run_replay(request: HttpRequest, run_id) -> HttpResponse:
    """The run's replays, and the form to ask for another (GET shows it, POST submits it)."""
    run = get_object_or_404(runs_visible_to(request.user), pk=run_id)
    form = ReplayForm(request.POST or None, workflow=run.workflow if run.release_id else "")
    if request.method == "POST":
        replay = form.submit(
            lambda data: services.replay_request(
                run=run, release=data.get("release"), reason=data["reason"], user=request.user
            )
        )
        if replay is not None:
            return done(request, reverse("replay-detail", args=[replay.pk]), f"Replay {replay.pk} queued.")
    context = {"run": run, "form": form, "replays": selectors.replays_of(run.pk)[:RECENT]}
    return render(request, "replays/run.html", context, status=form.status_code)


@roles_required(PLATFORM, AUDITOR, ADMIN)
def replay_detail(request: HttpRequest, pk: int) -> HttpResponse:
    replay = get_object_or_404(selectors.replays(), pk=pk)
    template = "replays/_partials/report.html" if request.htmx else "replays/replay.html"
    return render(request, template, {"replay": replay, "report": replay.report})


@roles_required(PLATFORM, ADMIN)
def batch_create(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return console(request)
    form = ReplayBatchForm(request.POST)
    batch = form.submit(
        lambda data: services.replay_batch_request(
            release=data["release"], last_n=data["last_n"], reason=data["reason"], user=request.user
        )
    )
    if batch is None:
        return console(request, form)
    return done(request, reverse("replay-batch", args=[batch.pk]), f"Batch replay {batch.pk} queued.")


@roles_required(PLATFORM, AUDITOR, ADMIN)
def batch_detail(request: HttpRequest, pk: int) -> HttpResponse:
    batch = get_object_or_404(selectors.batches(), pk=pk)
    replays = selectors.replays().filter(batch=batch).order_by("pk")
    template = "replays/_partials/batch.html" if request.htmx else "replays/batch.html"
    return render(request, template, {"batch": batch, "replays": replays})
