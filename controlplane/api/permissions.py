"""One permission class for every API view: roles, narrowed by the API key's scopes.

A view declares `required_scopes` (HTTP method → scope) and optionally `required_roles`
(method → roles, any of which suffices). A browser session is limited by its user's roles
alone; an API key is limited by those roles and by the scopes it was issued with.
"""

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from controlplane.identity import has_role
from controlplane.models import ApiKey


class ScopedRolePermission(BasePermission):
    message = "Your role or API key scope does not allow this."

    def has_permission(self, request: Request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if not _implements(view, request.method):
            return True  # nothing to allow: the view answers 405 with the methods it has
        method = "GET" if request.method in {"HEAD", "OPTIONS"} else request.method
        scope = getattr(view, "required_scopes", {}).get(method)
        if scope is None:
            return False
        if isinstance(request.auth, ApiKey) and scope not in request.auth.scopes:
            self.message = f"This API key lacks the scope '{scope}'."
            return False
        roles = getattr(view, "required_roles", {}).get(method)
        if roles and not has_role(request.user, *roles):
            self.message = f"This needs one of the roles: {', '.join(roles)}."
            return False
        return True


def _implements(view, method: str) -> bool:
    """Whether DRF would dispatch `method` to a handler of the view (as `APIView.dispatch` decides)."""
    return method.lower() in view.http_method_names and hasattr(view, method.lower())


def api_key_of(request: Request) -> ApiKey | None:
    return request.auth if isinstance(request.auth, ApiKey) else None
