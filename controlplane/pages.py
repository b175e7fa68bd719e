"""What every app's pages share: role checks, pagination, the after-write redirect, and forms
whose valid data goes to one service call."""

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django_htmx.http import HttpResponseClientRedirect

from .errors import ServiceError
from .identity import has_role

PER_PAGE = 50
T = TypeVar("T")


def roles_required(*roles: str) -> Callable:
    """Signed in and holding one of `roles`; anyone else gets the 403 page."""

    def decorator(view: Callable) -> Callable:
        @login_required
        @wraps(view)
        def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not has_role(request.user, *roles):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return checked

    return decorator


def paged(request: HttpRequest, rows) -> Page:
    return Paginator(rows, PER_PAGE).get_page(request.GET.get("page"))


def done(request: HttpRequest, url: str, message: str) -> HttpResponse:
    """After a write: a whole new page load, also when htmx sent the form."""
    messages.success(request, message)
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


class ServiceForm(forms.Form):
    """A form whose valid data goes to one service call; a refusal becomes the form's errors."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.status_code = 200

    def submit(self, call: Callable[[dict], T]) -> T | None:
        """`call(cleaned_data)`'s result, or None with the errors (and the status to answer with) set."""
        if not self.is_valid():
            if self.is_bound:
                self.status_code = 422
            return None
        try:
            return call(self.cleaned_data)
        except ServiceError as error:
            self.status_code = error.status_code
            self.add_error(None, error.detail)
            for field, field_messages in (error.errors or {}).items():
                if field in self.fields:
                    self.add_error(field, field_messages)
            return None
