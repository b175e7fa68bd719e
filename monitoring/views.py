"""The dashboard (canary against baseline, trends, incidents) and the Prometheus endpoint."""

import hmac
from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controlplane.identity import ADMIN, AUDITOR, PLATFORM, has_role
from controlplane.pages import roles_required
from registry.models import Channel
from runs.models import Run

from .models import Incident
from .prometheus import BatonCollector
from .rollback import canary_comparison
from .workflow_metrics import daily_series, workflow_metrics

TREND_DAYS = 14
_registry = CollectorRegistry(auto_describe=False)
_registry.register(BatonCollector())


@roles_required(PLATFORM, AUDITOR, ADMIN)
def dashboard(request: HttpRequest) -> HttpResponse:
    since = timezone.now() - timedelta(days=TREND_DAYS)
    channels = list(Channel.objects.filter(release__isnull=False).select_related("release", "baseline"))
    rows = []
    for channel in channels:
        runs = Run.objects.filter(workflow=channel.workflow, channel=channel.name, created_at__gte=since)
        rows.append(
            {
                "channel": channel,
                "comparison": canary_comparison(channel),
                "metrics": workflow_metrics(runs.filter(release_id=channel.release_id)),
                "trend": daily_series(runs),
            }
        )
    context = {
        "rows": rows,
        "days": TREND_DAYS,
        "incidents": Incident.objects.select_related("channel")[:20],
        "settings": settings,
    }
    return render(request, "monitoring/dashboard.html", context)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition: with the bearer METRICS_TOKEN, or to signed-in platform engineers."""
    if not _may_scrape(request):
        return HttpResponse(
            "Metrics need the bearer token or a platform sign-in.\n", status=403, content_type="text/plain"
        )
    return HttpResponse(generate_latest(_registry), content_type=CONTENT_TYPE_LATEST)


def _may_scrape(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if token and offered and hmac.compare_digest(offered.encode(), token.encode()):
        return True
    return request.user.is_authenticated and has_role(request.user, PLATFORM, ADMIN)
