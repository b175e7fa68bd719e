"""One helper for pages that render whole or as an htmx partial from the same view."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def render_page(request: HttpRequest, template: str, partial: str, context: dict) -> HttpResponse:
    """The full page, or only `partial` when htmx asks for a fragment of it."""
    return render(request, partial if wants_fragment(request) else template, context)


def wants_fragment(request: HttpRequest) -> bool:
    """Whether htmx asks for a fragment of the page (not a boosted or history-restoring load)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted and not htmx.history_restore_request
