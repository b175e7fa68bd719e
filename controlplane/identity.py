"""Identities and roles: users in role groups, and the API keys that act for them.

A request's effective rights are its user's roles, narrowed by the key's scopes when it
came with an API key (a key can never do more than its user).
"""

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from .audit import record
from .models import ApiKey

REVIEWER, PLATFORM, AUDITOR, ADMIN = "reviewer", "platform", "auditor", "admin"
ROLES = (REVIEWER, PLATFORM, AUDITOR, ADMIN)
# Agents' service identities are users in this group: never a person, never a role.
AGENT = "agent"
AGENT_USERNAME_PREFIX = "agent."

SCOPES = {
    "tasks:write": "submit tasks",
    "runs:read": "read runs and their events",
    "runs:operate": "cancel, retry and replay runs",
    "approvals:read": "read the approval inbox",
    "approvals:decide": "approve or reject pending actions",
    "registry:read": "read agents, artifacts and releases",
    "registry:write": "change agents, artifacts and releases",
    "policy:read": "read policy decisions",
    "audit:read": "verify the ledger and export evidence",
}
DEFAULT_KEY_SCOPES = ("tasks:write", "runs:read")

_KEY_PREFIX = "baton"


def user_roles(user: AbstractBaseUser | AnonymousUser) -> frozenset[str]:
    """The user's role names, cached on the user object for the request."""
    if not user.is_authenticated:
        return frozenset()
    if not hasattr(user, "_baton_roles"):
        remember_roles(user, user.groups.filter(name__in=(*ROLES, AGENT)).values_list("name", flat=True))
    return user._baton_roles


def remember_roles(user: AbstractBaseUser, group_names: Iterable[str]) -> None:
    """Answer this request's role checks from the user's group names, read by the caller anyway."""
    names = {name for name in group_names if name in ROLES or name == AGENT}
    if user.is_superuser:
        names.add(ADMIN)
    user._baton_roles = frozenset(names)


def has_role(user: AbstractBaseUser | AnonymousUser, *roles: str) -> bool:
    return bool(user_roles(user) & set(roles))


@dataclass(frozen=True)
class Actor:
    """Who did something, as the audit ledger names them."""

    name: str
    kind: str = "user"  # user, agent or system
    credential: str = ""  # the API key prefix, when the request came with one
    roles: frozenset[str] = frozenset()  # what policy sees; not part of the audit label

    def __str__(self) -> str:
        label = f"{self.kind}:{self.name}"
        return f"{label}{_CREDENTIAL}{self.credential}" if self.credential else label


_CREDENTIAL = " key:"


def credential_in(label: str) -> str:
    """The API key prefix an actor's audit label names (see `Actor.__str__`); "" for none."""
    return label.partition(_CREDENTIAL)[2]


def actor_for(user: AbstractBaseUser, api_key: ApiKey | None = None) -> Actor:
    credential = api_key.prefix if api_key else ""
    roles = user_roles(user)
    if AGENT in roles:
        name = user.get_username().removeprefix(AGENT_USERNAME_PREFIX)
        return Actor(name=name, kind="agent", credential=credential, roles=roles)
    return Actor(name=user.get_username(), credential=credential, roles=roles)


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # shown once; only its hash is stored


def hash_key(raw_key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is safe here: a slow password hash only
    # helps against guessable secrets, and would cost every API request.
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def api_key_issue(
    *,
    user: AbstractBaseUser,
    name: str,
    scopes: list[str] | tuple[str, ...] = DEFAULT_KEY_SCOPES,
    expires_in: timedelta | None = None,
    issued_by: Actor,
) -> IssuedKey:
    unknown = sorted(set(scopes) - SCOPES.keys())
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(sorted(SCOPES))}")
    prefix = secrets.token_hex(4)
    raw_key = f"{_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        user=user,
        issued_by=_person(issued_by),
        name=name,
        prefix=prefix,
        key_hash=hash_key(raw_key),
        scopes=sorted(set(scopes)),
        expires_at=timezone.now() + expires_in if expires_in else None,
    )
    record(
        issued_by,
        "api_key.issued",
        api_key,
        {
            "user": user.get_username(),
            "name": name,
            "scopes": api_key.scopes,
            "expires_at": api_key.expires_at.isoformat() if api_key.expires_at else None,
        },
    )
    return IssuedKey(api_key=api_key, secret=raw_key)


def _person(actor: Actor) -> AbstractBaseUser | None:
    """The user an actor names, when a person (not the command line or the system) acted."""
    if actor.kind != "user":
        return None
    return get_user_model().objects.filter(username=actor.name).first()


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, revoked_by: Actor) -> ApiKey:
    """Revoke the key once: of two revocations at once, one is made and audited and the other
    finds the key revoked (a conditional update, not the state the caller read)."""
    revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    api_key.refresh_from_db(fields=["revoked_at"])
    if revoked:
        record(revoked_by, "api_key.revoked", api_key, {"user": api_key.user.get_username()})
    return api_key


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """The usable key matching `raw_key`, or None (unknown, revoked, expired, inactive user)."""
    if not raw_key.startswith(f"{_KEY_PREFIX}_"):
        return None
    api_key = ApiKey.objects.usable().select_related("user").filter(key_hash=hash_key(raw_key)).first()
    if api_key is None:
        return None
    now = timezone.now()
    # Touch at most once a minute: a write per request would serialise busy clients.
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key
