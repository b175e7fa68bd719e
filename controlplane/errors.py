"""Errors a service raises; the API turns each into problem details with its status.

Services stay free of HTTP; views stay free of `try`.
"""


class ServiceError(Exception):
    status_code = 400

    def __init__(self, detail: str, *, errors: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class InvalidInput(ServiceError):
    """Well-formed input that breaks the contract (unknown workflow, bad schema)."""

    status_code = 422


class Conflict(ServiceError):
    """The request clashes with what exists (an idempotency key reused with another body)."""

    status_code = 409


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404
