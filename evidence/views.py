"""Evidence pages for auditors: the ledger's status, and signed packages built in the background."""

from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from controlplane.htmx import render_page
from controlplane.identity import ADMIN, AUDITOR, actor_for
from controlplane.pages import done, roles_required

from . import signing
from .forms import EvidenceExportForm
from .models import AuditCheckpoint, EvidenceExport
from .services import evidence_export_start, evidence_scope, export_path, ledger_status

RECENT_EXPORTS = 10


@roles_required(AUDITOR, ADMIN)
def evidence_home(request: HttpRequest, form: EvidenceExportForm | None = None) -> HttpResponse:
    context = {
        "form": form or EvidenceExportForm(),
        "exports": _recent_exports(request),
        "last_checkpoint": AuditCheckpoint.objects.first(),
        "key_id": signing.key_id(),
    }
    return render(request, "evidence/home.html", context, status=form.status_code if form else 200)


@require_POST
@roles_required(AUDITOR, ADMIN)
def export_create(request: HttpRequest) -> HttpResponse:
    form = EvidenceExportForm(request.POST)
    export = form.submit(
        lambda data: evidence_export_start(
            scope=evidence_scope(
                run_id=str(data["run"] or ""),
                release_id=data["release"].strip(),
                since=data["since"],
                until=data["until"],
            ),
            format=data["format"],
            user=request.user,
            actor=actor_for(request.user),
        )
    )
    if export is None:
        return evidence_home(request, form)
    return done(
        request, reverse("evidence-home"), f"Evidence export {export.pk} started ({export.runs_total} runs)."
    )


@roles_required(AUDITOR, ADMIN)
def export_list(request: HttpRequest) -> HttpResponse:
    """The exports table alone: polled while one is still being built."""
    return render(request, "evidence/_partials/exports.html", {"exports": _recent_exports(request)})


@roles_required(AUDITOR, ADMIN)
def export_download(request: HttpRequest, pk: int) -> FileResponse:
    export = get_object_or_404(
        EvidenceExport, pk=pk, requested_by=request.user, status=EvidenceExport.Status.READY
    )
    path = export_path(export)
    if not path.exists():
        raise Http404("The package file is no longer on disk.")
    return FileResponse(
        path.open("rb"), as_attachment=True, filename=export.filename, content_type="application/zip"
    )


@roles_required(AUDITOR, ADMIN)
def ledger(request: HttpRequest) -> HttpResponse:
    """Verify the whole chain now (asked for, because it reads every event): the evidence page's
    ledger card with htmx, a page of its own without JavaScript."""
    context = {"status": ledger_status()}
    return render_page(request, "evidence/ledger.html", "evidence/_partials/ledger.html", context)


def _recent_exports(request: HttpRequest) -> list[EvidenceExport]:
    return list(
        EvidenceExport.objects.filter(requested_by=request.user).select_related("checkpoint")[:RECENT_EXPORTS]
    )
