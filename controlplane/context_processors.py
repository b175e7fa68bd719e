from django.http import HttpRequest

from .identity import user_roles


def navigation(request: HttpRequest) -> dict:
    return {"user_roles": user_roles(request.user) if hasattr(request, "user") else frozenset()}
