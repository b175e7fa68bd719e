"""Release as code: one YAML file declares teams, agents, artifacts, workflows and releases.

`bundle_apply` makes the registry match the file and is idempotent (applying the same file
again creates nothing); `bundle_export` writes a release back out as such a file.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from jsonschema import Draft202012Validator

from controlplane.errors import Conflict, InvalidInput
from controlplane.strict_json import TOO_DEEP, StrictJSONError, refuse_unstorable

from ..artifact_kinds import NAME_PATTERN, SIDE_EFFECTS, Problem, json_path
from ..models import Agent, Artifact, Channel, Release, Team
from . import agents as agent_services
from .artifacts import artifact_publish, raise_problems
from .releases import release_create, release_promote

# Order matters: tools before the agents allowed to use them, agents before the workflows naming them.
_ARTIFACT_KINDS_BEFORE_AGENTS = ("tool", "prompt", "model_config", "corpus", "policy_bundle")
_TOP_LEVEL_KEYS = {"teams", "artifacts", "agents", "workflows", "releases"}
_NAME = {"type": "string", "pattern": NAME_PATTERN}
_REF = {"type": "string", "minLength": 1, "maxLength": 120}  # name or name@version
# The shape `bundle_apply` reads; the services check the values (artifact contents, references).
_BUNDLE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "teams": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["slug", "name"],
                "additionalProperties": False,
                "properties": {
                    "slug": {"type": "string", "pattern": r"^[-a-zA-Z0-9_]{1,100}$"},
                    "name": {"type": "string", "minLength": 1, "maxLength": 200},
                    "support_queue": {"type": "string", "maxLength": 200},
                    "members": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "artifacts": {
            "type": "object",
            "propertyNames": {"enum": list(_ARTIFACT_KINDS_BEFORE_AGENTS)},
            "additionalProperties": {
                "type": ["object", "null"],
                "propertyNames": _NAME,
                "additionalProperties": {"type": "object", "properties": {"from_dir": {"type": "string"}}},
            },
        },
        "agents": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["slug", "display_name"],
                "additionalProperties": False,
                "properties": {
                    "slug": _NAME,
                    "display_name": {"type": "string", "minLength": 1, "maxLength": 200},
                    "owner_team": {"type": ["string", "null"]},
                    "purpose": {"type": "string", "maxLength": 5000},
                    "runbook_url": {"type": "string", "maxLength": 200},
                    "slo": {
                        "type": ["object", "null"],
                        "additionalProperties": False,
                        "properties": {
                            "p95_latency_ms": {
                                "type": ["integer", "null"],
                                "minimum": 1,
                                "maximum": Agent.MAX_SLO_P95_LATENCY_MS,
                            },
                            "success_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                        },
                    },
                    "data_classification": {"enum": Agent.Classification.values},
                    "allowed_tools": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["tool", "scope"],
                            "additionalProperties": False,
                            "properties": {"tool": _NAME, "scope": {"enum": list(SIDE_EFFECTS)}},
                        },
                    },
                    "status": {"enum": Agent.Status.values},
                    "retirement_reason": {"type": "string", "maxLength": 2000},
                },
            },
        },
        "workflows": {
            "type": ["object", "null"],
            "propertyNames": _NAME,
            "additionalProperties": {"type": ["string", "object"]},
        },
        "releases": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["workflow"],
                "additionalProperties": False,
                "properties": {
                    "workflow": _REF,
                    "policy_bundle": _REF,
                    "agents": {
                        "type": "object",
                        "additionalProperties": {"type": "object", "additionalProperties": _REF},
                    },
                    "pins": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "additionalProperties": {"type": "integer", "minimum": 1},
                        },
                    },
                    "notes": {"type": "string", "maxLength": 5000},
                    "channels": {
                        "type": "array",
                        "items": {
                            # A channel's name, or {name, mode, canary_percent} (these apply to objects only).
                            "type": ["string", "object"],
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "mode": {"enum": Channel.Mode.values},
                                "canary_percent": {"type": ["integer", "null"]},
                            },
                        },
                    },
                },
            },
        },
    },
}
_BUNDLE_VALIDATOR = Draft202012Validator(_BUNDLE_SCHEMA)


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)

    def note(self, created: bool, label: str) -> None:
        (self.created if created else self.unchanged).append(label)


def load_bundle_file(path: Path) -> dict:
    """The bundle a file declares, its shape checked and its policy folders read in."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise InvalidInput(f"Cannot read {path}: {error}") from error
    except RecursionError as error:  # the YAML parser recurses once per level of nesting
        raise InvalidInput(f"Cannot read {path}: {TOO_DEEP}.") from error
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} must hold a mapping with some of: {', '.join(sorted(_TOP_LEVEL_KEYS))}.")
    problems = [
        Problem(json_path(error.absolute_path), error.message)
        # Sorted by the path as text: YAML keys may be numbers beside strings, which do not compare.
        for error in sorted(_BUNDLE_VALIDATOR.iter_errors(data), key=lambda e: json_path(e.absolute_path))
    ]
    raise_problems(problems, str(path))
    data = _inline_policy_modules(data, base_dir=path.parent)
    try:  # what the API would refuse as JSON (deep nesting, NUL), with the policy data read in
        refuse_unstorable(data)
    except StrictJSONError as error:
        raise InvalidInput(f"{path} is invalid: {error}.") from error
    return data


@transaction.atomic
def bundle_apply(*, bundle: dict, author: AbstractBaseUser, actor: Any) -> ApplyReport:
    unknown = set(bundle) - _TOP_LEVEL_KEYS
    if unknown:
        raise InvalidInput(f"Unknown sections: {', '.join(sorted(unknown))}.")
    report = ApplyReport()
    for team in bundle.get("teams", []):
        _apply_team(team, actor, report)
    artifacts = bundle.get("artifacts", {})
    for kind in _ARTIFACT_KINDS_BEFORE_AGENTS:
        for name, content in (artifacts.get(kind) or {}).items():
            publication = artifact_publish(kind=kind, name=name, content=content, author=author, actor=actor)
            report.note(publication.created, str(publication.artifact))
    for spec in bundle.get("agents", []):
        _apply_agent(spec, actor, report)
    for name, source in (bundle.get("workflows") or {}).items():
        publication = artifact_publish(kind="workflow", name=name, content=source, author=author, actor=actor)
        report.note(publication.created, str(publication.artifact))
    for spec in bundle.get("releases", []):
        spec = dict(spec)
        channels = spec.pop("channels", [])
        notes = spec.pop("notes", "")
        creation = release_create(spec=spec, author=author, actor=actor, notes=notes)
        report.note(creation.created, f"release {creation.release.id}")
        report.releases.append(creation.release.id)
        for channel in channels:
            channel = channel if isinstance(channel, dict) else {"name": channel}
            release_promote(
                release=creation.release,
                channel=channel["name"],
                actor=actor,
                mode=channel.get("mode", "full"),
                canary_percent=channel.get("canary_percent"),
                reason="release_apply",
            )
    return report


def _apply_team(spec: dict, actor: Any, report: ApplyReport) -> None:
    team = Team.objects.filter(slug=spec["slug"]).first()
    if team:
        report.note(False, f"team {team.slug}")
        return
    members = get_user_model().objects.filter(username__in=spec.get("members", []))
    try:
        agent_services.team_create(
            slug=spec["slug"],
            name=spec["name"],
            support_queue=spec.get("support_queue", ""),
            members=members,
            actor=actor,
        )
    except Conflict:  # created by an apply of the same file at the same moment
        report.note(False, f"team {spec['slug']}")
        return
    report.note(True, f"team {spec['slug']}")


def _apply_agent(spec: dict, actor: Any, report: ApplyReport) -> None:
    spec = dict(spec)
    slug, status = spec.pop("slug"), spec.pop("status", Agent.Status.DRAFT)
    fields = _agent_fields(spec)
    agent = Agent.objects.filter(slug=slug).first()
    registered = agent is None
    if registered:
        try:
            agent = agent_services.agent_register(slug=slug, actor=actor, **fields)
        except Conflict:  # registered by an apply of the same file at the same moment
            agent, registered = Agent.objects.get(slug=slug), False
    if registered:
        report.note(True, f"agent {slug}")
    else:
        changes = {key: value for key, value in fields.items() if getattr(agent, key) != value}
        if changes:
            agent = agent_services.agent_update(agent=agent, changes=changes, actor=actor)
        report.note(bool(changes), f"agent {slug}")
    if agent.status != status:
        agent_services.agent_transition(
            agent=agent, to_status=status, actor=actor, reason=spec.get("retirement_reason", "release_apply")
        )


def _agent_fields(spec: dict) -> dict:
    slo = spec.pop("slo", {}) or {}
    owner = spec.pop("owner_team", None)
    spec.pop("retirement_reason", None)
    team = Team.objects.filter(slug=owner).first() if owner else None
    if owner and team is None:
        raise InvalidInput(f"Unknown team {owner!r}.")
    rate = slo.get("success_rate")
    return {
        "display_name": spec.pop("display_name"),
        "owner_team": team,
        "purpose": spec.pop("purpose", ""),
        "runbook_url": spec.pop("runbook_url", ""),
        "slo_p95_latency_ms": slo.get("p95_latency_ms"),
        "slo_success_rate": Decimal(str(rate)).quantize(Decimal("0.0001")) if rate is not None else None,
        "data_classification": spec.pop("data_classification", Agent.Classification.INTERNAL),
        "allowed_tools": spec.pop("allowed_tools", []),
        **_refuse_unknown(spec),
    }


def _refuse_unknown(spec: dict) -> dict:
    if spec:
        raise InvalidInput(f"Unknown agent fields: {', '.join(sorted(spec))}.")
    return {}


def _inline_policy_modules(data: dict, *, base_dir: Path) -> dict:
    """`policy_bundle: {name: {from_dir: path}}` reads the .rego files and data.json from a folder."""
    bundles = (data.get("artifacts") or {}).get("policy_bundle") or {}
    for name, content in list(bundles.items()):
        if isinstance(content, dict) and "from_dir" in content:
            folder = (base_dir / content["from_dir"]).resolve()
            modules = {path.name: path.read_text() for path in sorted(folder.glob("*.rego"))}
            data_file = folder / "data.json"
            bundles[name] = {
                "modules": modules,
                **({"data": yaml.safe_load(data_file.read_text())} if data_file.exists() else {}),
            }
    return data


def bundle_export(release: Release) -> dict:
    """A bundle that recreates `release` (same artifact contents, agents and team) when applied."""
    artifacts: dict[str, dict] = {}
    for artifact in release.artifacts.order_by("kind", "name"):
        if artifact.kind != Artifact.Kind.WORKFLOW:
            artifacts.setdefault(artifact.kind, {})[artifact.name] = artifact.content
    workflow = release.artifacts.get(kind=Artifact.Kind.WORKFLOW)
    agents = list(release.agents.select_related("owner_team").order_by("slug"))
    teams = {agent.owner_team for agent in agents if agent.owner_team}
    manifest = release.manifest
    return {
        "teams": [
            {"slug": t.slug, "name": t.name, "support_queue": t.support_queue}
            for t in sorted(teams, key=lambda t: t.slug)
        ],
        "artifacts": artifacts,
        "agents": [_agent_spec(agent) for agent in agents],
        "workflows": {workflow.name: workflow.content},
        "releases": [
            {
                "workflow": workflow.name,
                "policy_bundle": next(iter(manifest["artifacts"]["policy_bundle"])),
                "agents": manifest["agents"],
                **({"notes": release.notes} if release.notes else {}),
            }
        ],
    }


def _agent_spec(agent: Agent) -> dict:
    spec = {
        "slug": agent.slug,
        "display_name": agent.display_name,
        "owner_team": agent.owner_team.slug if agent.owner_team else None,
        "purpose": agent.purpose,
        "runbook_url": agent.runbook_url,
        "slo": {
            "p95_latency_ms": agent.slo_p95_latency_ms,
            "success_rate": float(agent.slo_success_rate) if agent.slo_success_rate is not None else None,
        },
        "data_classification": agent.data_classification,
        "allowed_tools": agent.allowed_tools,
        "status": agent.status,
    }
    return spec
