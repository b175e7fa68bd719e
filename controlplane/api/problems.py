"""Errors as RFC 9457 problem details: `{type, title, status, detail, errors?}`.

Every API error, whether raised by DRF, by a service or by Django itself, leaves as one of
these with the right status; a client can branch on `type`.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler

from controlplane.errors import ServiceError

PROBLEM_CONTENT_TYPE = "application/problem+json"

# Status -> (the `type` slug, the title) of its problem.
PROBLEM_TYPES = {
    400: ("malformed-request", "Malformed request"),
    401: ("not-authenticated", "Authentication required"),
    403: ("forbidden", "Permission denied"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Validation failed"),
    429: ("throttled", "Too many requests"),
    500: ("server-error", "Internal server error"),
}


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


class Unprocessable(exceptions.APIException):
    """Well-formed input that breaks a schema or a rule (validation errors use 422 too)."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "The request is well-formed but cannot be processed."
    default_code = "unprocessable"


def problem(status_code: int, detail: str, *, errors: dict | list | None = None) -> dict:
    slug, title = PROBLEM_TYPES.get(status_code, ("error", "Error"))
    body = {"type": f"urn:baton:problem:{slug}", "title": title, "status": status_code, "detail": detail}
    if errors:
        body["errors"] = errors
    return body


def problem_response(status_code: int, detail: str, *, errors: dict | list | None = None) -> JsonResponse:
    """For code outside DRF (Django's 404/500 handlers, middleware)."""
    return JsonResponse(
        problem(status_code, detail, errors=errors), status=status_code, content_type=PROBLEM_CONTENT_TYPE
    )


def problem_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, ServiceError):
        body = problem(exc.status_code, exc.detail, errors=exc.errors)
        return _as_json(Response(body, status=exc.status_code, content_type=PROBLEM_CONTENT_TYPE), context)
    response = exception_handler(exc, context)
    if response is None:
        return None
    errors = None
    if isinstance(exc, exceptions.ValidationError):
        # A body that parsed but does not fit the contract is a schema violation.
        response.status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
        errors = exc.detail
        detail = _first_message(exc.detail)
    else:
        detail = str(exc.detail) if hasattr(exc, "detail") else str(exc)
    response.data = problem(response.status_code, detail, errors=errors)
    response.content_type = PROBLEM_CONTENT_TYPE
    return _as_json(response, context)


def _as_json(response: Response, context: dict) -> Response:
    """A problem is JSON whatever the view renders when it succeeds (the schema's YAML, the
    docs' HTML): DRF renders an error with the renderer it chose for the request."""
    request = context.get("request")
    if request is not None:
        request.accepted_renderer, request.accepted_media_type = JSONRenderer(), PROBLEM_CONTENT_TYPE
    return response


def _first_message(detail: dict | list | str, path: str = "") -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            label = key if key != "non_field_errors" else ""
            return _first_message(value, f"{path}.{label}".strip(".") if label else path)
    if isinstance(detail, list) and detail:
        return _first_message(detail[0], path)
    return f"{path}: {detail}" if path else str(detail)
