"""Operations endpoints and the pages every app shares (home, errors)."""

import logging

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .api.problems import problem_response
from .celery import app as celery_app
from .htmx import page_of, render_page

logger = logging.getLogger(__name__)


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """The database and the broker are reachable: safe to send traffic here."""
    checks = {"database": _database_ready(), "broker": _broker_ready()}
    ready = all(checks.values())
    return JsonResponse(
        {
            "status": "ok" if ready else "unavailable",
            "checks": {k: "ok" if v else "down" for k, v in checks.items()},
        },
        status=200 if ready else 503,
    )


def _database_ready() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        logger.warning("readiness: database unreachable", exc_info=True)
        return False


def _broker_ready() -> bool:
    try:
        with celery_app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        logger.warning("readiness: broker unreachable", exc_info=True)
        return False


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "controlplane/home.html")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return problem_response(404, "No such resource.")
    return render(request, "errors/404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return problem_response(500, "The server failed to handle the request; it has been logged.")
    return render(request, "errors/500.html", status=500)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return problem_response(400, "The request could not be understood.")
    return render(request, "errors/400.html", status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return problem_response(403, "Permission denied.")
    return render_page(request, "errors/403.html", "errors/_403.html", {}, status=403)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A form from a page opened before the user signed in or out (Django rotates the token):
    say so, and lead back to that page (htmx swaps this in where the form's answer goes)."""
    if _is_api(request):
        return problem_response(403, f"CSRF verification failed: {reason}")
    context = {"page": page_of(request) or "/"}
    return render_page(request, "errors/csrf.html", "errors/_csrf.html", context, status=403)
