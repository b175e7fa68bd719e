from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest
from django.urls import get_script_prefix, get_urlconf, reverse

from .identity import user_roles

# The main navigation's links (key in `nav_urls` → URL name).
NAV_URL_NAMES = {
    "home": "home",
    "runs": "run-list",
    "registry": "registry-agent-list",
    "approvals": "approval-inbox",
    "approval_history": "approval-history",
    "approval_count": "approval-count",
    "policy": "policy-decision-list",
    "monitoring": "monitoring-dashboard",
    "replays": "replay-console",
    "evidence": "evidence-home",
    "api": "api-docs",
    "admin": "admin:index",
    "logout": "logout",
}
# The section of the navigation each page belongs to, by the start of its URL name.
NAV_SECTIONS = (
    ("runs", ("run-", "dead-letter-list")),
    ("registry", ("registry-",)),
    ("approvals", ("approval-",)),
    ("policy", ("policy-",)),
    ("monitoring", ("monitoring-",)),
    ("replays", ("replay-",)),
    ("evidence", ("evidence-",)),
)


def navigation(request: HttpRequest) -> dict:
    match = getattr(request, "resolver_match", None)
    url_name = (match and match.url_name) or ""
    return {
        "user_roles": user_roles(request.user) if hasattr(request, "user") else frozenset(),
        "nav_urls": _nav_urls(get_urlconf() or settings.ROOT_URLCONF, get_script_prefix()),
        "nav_section": next((name for name, starts in NAV_SECTIONS if url_name.startswith(starts)), ""),
    }


@lru_cache(maxsize=8)
def _nav_urls(urlconf: str, script_prefix: str) -> dict[str, str]:
    """Reversed once per process for each URLconf and prefix: every page shows these links, and
    reversing a URL name costs tens of microseconds."""
    return {key: reverse(name, urlconf=urlconf) for key, name in NAV_URL_NAMES.items()}
