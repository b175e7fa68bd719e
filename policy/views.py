"""Policy pages: the decision log and impact analysis, for operators and auditors."""

import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from controlplane.htmx import render_page
from controlplane.identity import ADMIN, AUDITOR, PLATFORM
from controlplane.pages import paged, roles_required
from registry.models import Artifact

from . import selectors
from .bundles import bundle_by_ref, governance_bundle
from .decision_points import POINTS
from .impact import DEFAULT_SAMPLE, impact_analysis
from .models import PolicyDecision


@roles_required(PLATFORM, AUDITOR, ADMIN)
def decision_list(request: HttpRequest) -> HttpResponse:
    filters = {key: request.GET.get(key, "") for key in ("point", "outcome", "failure", "run_id")}
    decisions = selectors.decisions_list(
        point=filters["point"] if filters["point"] in POINTS else "",
        allow={"allow": True, "deny": False}.get(filters["outcome"]),
        failure=filters["failure"] if filters["failure"] in PolicyDecision.Failure.values else "",
        run_id=filters["run_id"].strip(),
    )
    context = {
        "page": paged(request, decisions),
        "points": sorted(POINTS),
        "failures": [choice for choice in PolicyDecision.Failure.choices if choice[0]],
        "filters": filters,
    }
    return render_page(request, "policy/decision_list.html", "policy/_partials/decision_rows.html", context)


@roles_required(PLATFORM, AUDITOR, ADMIN)
def decision_detail(request: HttpRequest, pk: int) -> HttpResponse:
    decision = get_object_or_404(PolicyDecision, pk=pk)
    # JSON, as a dry run (`POST /api/v1/policy/evaluate`) takes it back; the template escapes it.
    input_json = json.dumps(decision.input, indent=2, ensure_ascii=False)
    return render(request, "policy/decision_detail.html", {"decision": decision, "input_json": input_json})


@roles_required(PLATFORM, AUDITOR, ADMIN)
def impact(request: HttpRequest) -> HttpResponse:
    """Pick a published bundle version; see which recent decisions it would change."""
    candidates = Artifact.objects.filter(kind=Artifact.Kind.POLICY_BUNDLE).order_by("name", "-version")
    chosen = request.GET.get("bundle", "")
    context = {
        "candidates": candidates,
        "chosen": chosen,
        "current": governance_bundle(),
        "points": sorted(POINTS),
        "point": request.GET.get("point", ""),
        "sample": DEFAULT_SAMPLE,
    }
    if chosen:
        bundle = bundle_by_ref(chosen)
        if bundle is None:
            context["error"] = f"No published policy bundle {chosen!r}."
        else:
            point = context["point"] if context["point"] in POINTS else ""
            context["report"] = impact_analysis(bundle, point=point)
            context["bundle"] = bundle
    if "error" in context:
        return render(request, "policy/impact.html", context, status=422)
    return render_page(request, "policy/impact.html", "policy/_partials/impact_report.html", context)
