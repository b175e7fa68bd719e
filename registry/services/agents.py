"""Teams and agents: registration, edits, lifecycle and service identities."""

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from controlplane.audit import record
from controlplane.errors import Conflict, Forbidden, InvalidInput
from controlplane.identity import AGENT, AGENT_USERNAME_PREFIX, IssuedKey, api_key_issue

from .. import hooks
from ..artifact_kinds import SIDE_EFFECTS
from ..models import Agent, Artifact, Team

# Fields a platform user may change on a non-retired agent.
EDITABLE_FIELDS = (
    "display_name",
    "owner_team",
    "purpose",
    "runbook_url",
    "slo_p95_latency_ms",
    "slo_success_rate",
    "data_classification",
    "allowed_tools",
)
# Allowed moves; activation has extra requirements (see _activation_problems).
TRANSITIONS = {
    Agent.Status.DRAFT: {Agent.Status.ACTIVE, Agent.Status.RETIRED},
    Agent.Status.ACTIVE: {Agent.Status.DEPRECATED, Agent.Status.RETIRED},
    Agent.Status.DEPRECATED: {Agent.Status.ACTIVE, Agent.Status.RETIRED},
    Agent.Status.RETIRED: set(),
}
# An agent's key may read and submit, never change the registry or decide approvals.
AGENT_KEY_SCOPES = ("tasks:write", "runs:read", "registry:read", "policy:read")


@transaction.atomic
def team_create(*, slug: str, name: str, support_queue: str = "", members=(), actor: Any) -> Team:
    try:
        # The unique slug, not a look beforehand, decides between two creations at once.
        with transaction.atomic():
            team = Team.objects.create(slug=slug, name=name, support_queue=support_queue)
    except IntegrityError as error:
        raise Conflict(f"A team {slug!r} already exists.") from error
    team.members.set(members)
    record(
        actor,
        "team.created",
        team,
        {
            "slug": slug,
            "name": name,
            "support_queue": support_queue,
            "members": sorted(m.get_username() for m in team.members.all()),
        },
    )
    return team


@transaction.atomic
def agent_register(*, slug: str, display_name: str, actor: Any, **fields: Any) -> Agent:
    """Create an agent in draft, with a service identity of its own (no shared credentials)."""
    _check_allowed_tools(fields.get("allowed_tools", []))
    _check_runbook(fields.get("runbook_url", ""))
    try:
        # The unique slug and username, not a look beforehand, decide between two registrations at once.
        with transaction.atomic():
            service_user = get_user_model().objects.create_user(username=f"{AGENT_USERNAME_PREFIX}{slug}")
            agent = Agent.objects.create(
                slug=slug, display_name=display_name, service_user=service_user, **fields
            )
    except IntegrityError as error:
        raise Conflict(f"An agent {slug!r} already exists.") from error
    service_user.groups.add(Group.objects.get(name=AGENT))
    record(actor, "agent.registered", agent, {"slug": slug, **_snapshot(agent)})
    return agent


@transaction.atomic
def agent_update(*, agent: Agent, changes: dict[str, Any], actor: Any) -> Agent:
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if agent.status == Agent.Status.RETIRED:
        raise Conflict(f"Agent {agent.slug!r} is retired and cannot change.")
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidInput(f"These fields cannot be edited: {', '.join(sorted(unknown))}.")
    if "allowed_tools" in changes:
        _check_allowed_tools(changes["allowed_tools"])
    _check_runbook(changes.get("runbook_url", ""))
    before = _snapshot(agent)
    for field, value in changes.items():
        setattr(agent, field, value)
    if agent.status == Agent.Status.ACTIVE:
        _raise_activation_problems(agent)
    agent.updated_at = Now()
    agent.save()
    agent.refresh_from_db()
    after = _snapshot(agent)
    changed = {key: {"from": before[key], "to": after[key]} for key in after if before[key] != after[key]}
    if changed:
        record(actor, "agent.updated", agent, {"changes": changed})
    return agent


def agent_transition(*, agent: Agent, to_status: str, actor: Any, reason: str = "") -> Agent:
    """Move an agent along its lifecycle. A move that policy refuses is recorded, then raised."""
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if to_status == agent.status:
            return agent
        if to_status not in TRANSITIONS[agent.status]:
            raise Conflict(f"Agent {agent.slug!r} cannot go from {agent.status} to {to_status}.")
        if to_status == Agent.Status.ACTIVE:
            _raise_activation_problems(agent)
        if to_status == Agent.Status.RETIRED and not reason.strip():
            raise InvalidInput(
                "Retiring an agent needs a reason.", errors={"reason": ["This field is required."]}
            )
        refusals = [
            refusal for check in hooks.lifecycle_checks for refusal in check(agent, to_status, reason, actor)
        ]
        if refusals:
            record(
                actor,
                "agent.lifecycle_refused",
                agent,
                {"from": agent.status, "to": to_status, "reasons": refusals},
            )
        else:
            _apply_transition(agent, to_status, reason, actor)
    if refusals:
        raise Forbidden(
            f"Policy refuses {agent.slug} → {to_status}: {'; '.join(refusals)}.", errors={"policy": refusals}
        )
    return agent


def _apply_transition(agent: Agent, to_status: str, reason: str, actor: Any) -> None:
    if to_status == Agent.Status.RETIRED:
        agent.retired_at = Now()
        agent.retirement_reason = reason
        # Its identity dies with it: every key of the service user stops working.
        agent.service_user.is_active = False
        agent.service_user.save(update_fields=["is_active"])
    previous = agent.status
    agent.status = to_status
    agent.updated_at = Now()
    agent.save()
    agent.refresh_from_db()
    record(actor, "agent.lifecycle", agent, {"from": previous, "to": to_status, "reason": reason})


@transaction.atomic
def agent_issue_key(
    *, agent: Agent, actor: Any, scopes=AGENT_KEY_SCOPES, expires_in: timedelta | None = None
) -> IssuedKey:
    # Locked as a retirement locks it: a key is never issued to an identity retiring meanwhile.
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if agent.status == Agent.Status.RETIRED:
        raise Conflict(f"Agent {agent.slug!r} is retired; it cannot get a key.")
    too_wide = sorted(set(scopes) - set(AGENT_KEY_SCOPES))
    if too_wide:
        raise InvalidInput(f"An agent's key cannot have: {', '.join(too_wide)}.")
    return api_key_issue(
        user=agent.service_user,
        name=f"agent {agent.slug}",
        scopes=scopes,
        expires_in=expires_in,
        issued_by=actor,
    )


def _check_runbook(url: str) -> None:
    # Rendered as a link: anything but http(s) (javascript:, data:) is refused.
    if url and not url.lower().startswith(("https://", "http://")):
        raise InvalidInput(
            "A runbook URL must start with http:// or https://.", errors={"runbook_url": ["Bad URL."]}
        )


def _raise_activation_problems(agent: Agent) -> None:
    missing = {
        "owner_team": agent.owner_team_id is None,
        "runbook_url": not agent.runbook_url,
        "slo_p95_latency_ms": agent.slo_p95_latency_ms is None,
        "slo_success_rate": agent.slo_success_rate is None,
    }
    errors = {field: ["Required for an active agent."] for field, is_missing in missing.items() if is_missing}
    if errors:
        raise InvalidInput(
            f"Agent {agent.slug!r} cannot be active without an owner team, a runbook and SLOs "
            f"(missing: {', '.join(errors)}).",
            errors=errors,
        )


def _check_allowed_tools(allowed_tools: list[dict]) -> None:
    names = [entry["tool"] for entry in allowed_tools]
    errors = {}
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        errors["allowed_tools"] = [f"Listed more than once: {', '.join(duplicates)}."]
    bad_scopes = sorted({entry["scope"] for entry in allowed_tools} - set(SIDE_EFFECTS))
    if bad_scopes:
        errors.setdefault("allowed_tools", []).append(f"Unknown scope(s): {', '.join(bad_scopes)}.")
    published = set(
        Artifact.objects.filter(kind=Artifact.Kind.TOOL, name__in=names).values_list("name", flat=True)
    )
    unknown = sorted(set(names) - published)
    if unknown:
        errors.setdefault("allowed_tools", []).append(f"Unknown tool(s): {', '.join(unknown)}.")
    if errors:
        raise InvalidInput(next(iter(errors.values()))[0], errors=errors)


def _snapshot(agent: Agent) -> dict[str, Any]:
    return {
        "display_name": agent.display_name,
        "owner_team": agent.owner_team.slug if agent.owner_team_id else None,
        "purpose": agent.purpose,
        "runbook_url": agent.runbook_url,
        "slo_p95_latency_ms": agent.slo_p95_latency_ms,
        "slo_success_rate": str(agent.slo_success_rate) if agent.slo_success_rate is not None else None,
        "data_classification": agent.data_classification,
        "allowed_tools": agent.allowed_tools,
        "status": agent.status,
    }
