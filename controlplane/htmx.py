"""What pages share about htmx: rendering whole or as a fragment, and the sign-in redirect."""

from collections.abc import Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render, resolve_url
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HttpResponseClientRedirect


def render_page(
    request: HttpRequest, template: str, partial: str, context: dict, status: int = 200
) -> HttpResponse:
    """The full page, or only `partial` when htmx asks for a fragment of it."""
    return render(request, partial if wants_fragment(request) else template, context, status=status)


def wants_fragment(request: HttpRequest) -> bool:
    """Whether htmx asks for a fragment of the page (not a boosted or history-restoring load)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted and not htmx.history_restore_request


def page_of(request: HttpRequest) -> str | None:
    """The path of the page the request was sent from, if it is on this site: htmx names it,
    a plain form's Referer does."""
    htmx = getattr(request, "htmx", None)
    page = htmx.current_url if htmx else request.headers.get("Referer")
    if not page or not url_has_allowed_host_and_scheme(page, allowed_hosts={request.get_host()}):
        return None
    path = urlunsplit(urlsplit(page)._replace(scheme="", netloc="", fragment=""))
    # This site's `https://host//elsewhere.example/` leaves `//elsewhere.example/`: another site.
    return path if url_has_allowed_host_and_scheme(path, allowed_hosts=None) else None


def sign_in_as_a_whole_page(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable:
    """Middleware (after django-htmx's): when a session ends under an open page, its next htmx
    request (the inbox's poll, a run's timeline, a decision) is redirected to the sign-in page,
    which the browser's XHR would follow and htmx swap into the fragment that asked. Instead the
    browser goes to the sign-in page, which leads back to the page the user was on."""
    sign_in_path = resolve_url(settings.LOGIN_URL)

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        redirected_to = urlsplit(response.get("Location", "")).path if response.status_code == 302 else None
        if request.htmx and redirected_to == sign_in_path:
            page = page_of(request) or request.get_full_path()
            return HttpResponseClientRedirect(f"{sign_in_path}?{urlencode({'next': page})}")
        return response

    return middleware
