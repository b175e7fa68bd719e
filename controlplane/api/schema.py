"""The OpenAPI schema documents the errors every operation can answer with, as problem details.

drf-spectacular documents the success response a view declares; the errors come from one
exception handler (`problems.py`) and follow from what an operation takes: every operation
needs a caller (401) with a role and scope (403); path parameters name something that may not
exist (404), as may a list's page cursor (DRF answers an unknown one with 404); a body may be
malformed (400), too large (413), of another media type (415) or break the contract (422), as
may query filters (422); and a change may clash with the current state (409) unless the
operation declares it changes nothing (`CHANGES_NOTHING`). What an operation's parameters
alone do not tell (a query parameter naming a run that may not exist) it declares itself, with
`documented_problem`.
"""

from typing import Any

from drf_spectacular.utils import OpenApiResponse

from .problems import PROBLEM_CONTENT_TYPE, PROBLEM_TYPES

# An operation's extension saying it only computes an answer (a dry run): it never conflicts.
CHANGES_NOTHING = {"x-changes-nothing": True}
UNSAFE_METHODS = {"post", "put", "patch", "delete"}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details. Branch on `type`; `detail` is for people.",
    "properties": {
        "type": {"type": "string", "example": "urn:baton:problem:validation-error"},
        "title": {"type": "string", "example": "Validation failed"},
        "status": {"type": "integer", "example": 422},
        "detail": {"type": "string"},
        "errors": {
            "description": "Per-field messages, as the fields of the request are named.",
            "oneOf": [{"type": "object", "additionalProperties": True}, {"type": "array", "items": {}}],
        },
    },
    "required": ["type", "title", "status", "detail"],
}


def documented_problem(description: str) -> OpenApiResponse:
    """A problem answer for `extend_schema(responses={(status, PROBLEM_CONTENT_TYPE): ...})`."""
    return OpenApiResponse(PROBLEM_REF, description=description)


def document_problems(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular postprocessing hook: add the Problem component and each operation's errors."""
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in _problem_statuses(method, operation):
                responses.setdefault(str(status), _problem_response(status))
    return result


def _problem_statuses(method: str, operation: dict) -> list[int]:
    parameters = operation.get("parameters", [])
    statuses = [401, 403]
    if any(parameter["in"] == "path" or parameter["name"] == "cursor" for parameter in parameters):
        statuses.append(404)
    if "requestBody" in operation:
        statuses += [400, 413, 415, 422]
    elif any(parameter["in"] == "query" for parameter in parameters):
        statuses.append(422)
    if method in UNSAFE_METHODS and not operation.get("x-changes-nothing"):
        statuses.append(409)
    return sorted(statuses)


def _problem_response(status: int) -> dict:
    return {
        "description": PROBLEM_TYPES[status][1],
        "content": {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_REF}},
    }
