"""Read queries for the registry: lists with their relations loaded, histories and diffs."""

import difflib
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery

from controlplane.models import AuditEvent

from .models import Agent, Artifact, Channel, ChannelChange, Release, Team


def agents_list(*, owner: str = "", status: str = "", classification: str = "") -> QuerySet[Agent]:
    agents = Agent.objects.select_related("owner_team").order_by("slug")
    if owner:
        agents = agents.filter(owner_team__slug=owner)
    if status:
        agents = agents.filter(status=status)
    if classification:
        agents = agents.filter(data_classification=classification)
    return agents


def teams_list() -> QuerySet[Team]:
    return Team.objects.annotate(agent_count=Count("agents")).prefetch_related("members").order_by("slug")


def object_history(obj: Any) -> QuerySet[AuditEvent]:
    """Audit events about one registry object, oldest first."""
    return AuditEvent.objects.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk)).order_by("seq")


def releases_list(*, workflow: str = "") -> QuerySet[Release]:
    releases = Release.objects.select_related("author").annotate(
        signoff_count=Count("signoffs", distinct=True)
    )
    if workflow:
        releases = releases.filter(workflow=workflow)
    return releases.order_by("-created_at", "-pk")


def release_detail(release_id: str) -> Release:
    return (
        Release.objects.select_related("author")
        .prefetch_related(
            "signoffs__user",
            "evaluations",
            "agents",
            Prefetch("artifacts", queryset=Artifact.objects.order_by("kind", "name")),
        )
        .get(pk=release_id)
    )


def channels_list(*, workflow: str = "") -> QuerySet[Channel]:
    channels = Channel.objects.select_related("release", "baseline")
    return channels.filter(workflow=workflow) if workflow else channels


def channel_history(release: Release) -> QuerySet[ChannelChange]:
    """Every promotion or rollback that involved the release, newest first."""
    return (
        (ChannelChange.objects.filter(release=release) | ChannelChange.objects.filter(baseline=release))
        .select_related("channel")
        .order_by("-created_at", "-pk")
    )


def artifacts_latest(*, kind: str = "") -> QuerySet[Artifact]:
    """The newest version of every artifact name."""
    newest = (
        Artifact.objects.filter(kind=OuterRef("kind"), name=OuterRef("name"))
        .order_by("-version")
        .values("version")[:1]
    )
    artifacts = Artifact.objects.select_related("author").filter(version=Subquery(newest))
    if kind:
        artifacts = artifacts.filter(kind=kind)
    return artifacts.order_by("kind", "name")


def artifact_versions(kind: str, name: str) -> QuerySet[Artifact]:
    return Artifact.objects.filter(kind=kind, name=name).select_related("author").order_by("-version")


@dataclass
class ArtifactChange:
    kind: str
    name: str
    status: str  # added, removed, changed, unchanged
    old_version: int | None
    new_version: int | None
    text_diff: list[str] = field(default_factory=list)


def release_diff(old: Release, new: Release) -> list[ArtifactChange]:
    """Artifact by artifact, what changed from `old` to `new`, with text diffs of what is text."""
    old_pins, new_pins = _pins(old), _pins(new)
    wanted = {
        (kind, name, pin["version"]) for pins in (old_pins, new_pins) for (kind, name), pin in pins.items()
    }
    contents = {
        (a.kind, a.name, a.version): a.content
        for a in Artifact.objects.filter(
            pk__in=[*old.artifacts.values_list("pk", flat=True), *new.artifacts.values_list("pk", flat=True)]
        )
        if (a.kind, a.name, a.version) in wanted
    }
    changes = []
    for kind, name in sorted(old_pins.keys() | new_pins.keys()):
        before, after = old_pins.get((kind, name)), new_pins.get((kind, name))
        if before and after and before["digest"] == after["digest"]:
            changes.append(ArtifactChange(kind, name, "unchanged", before["version"], after["version"]))
            continue
        old_text = _as_text(kind, contents.get((kind, name, before["version"]))) if before else ""
        new_text = _as_text(kind, contents.get((kind, name, after["version"]))) if after else ""
        status = "changed" if before and after else ("added" if after else "removed")
        diff = list(
            difflib.unified_diff(
                old_text.splitlines(),
                new_text.splitlines(),
                f"{name}@{before['version']}" if before else "(none)",
                f"{name}@{after['version']}" if after else "(none)",
                lineterm="",
            )
        )
        changes.append(
            ArtifactChange(kind, name, status, before and before["version"], after and after["version"], diff)
        )
    return changes


def _pins(release: Release) -> dict[tuple[str, str], dict]:
    return {
        (kind, name): pin
        for kind, pins in release.manifest["artifacts"].items()
        for name, pin in pins.items()
    }


def _as_text(kind: str, content: Any) -> str:
    """Prompts diff as their template, policies as their Rego, everything else as YAML."""
    if content is None:
        return ""
    if kind == Artifact.Kind.PROMPT:
        return content["template"] + "\n---\n" + yaml.safe_dump(content["variables_schema"], sort_keys=True)
    if kind == Artifact.Kind.POLICY_BUNDLE:
        modules = "".join(f"# {name}\n{source}\n" for name, source in sorted(content["modules"].items()))
        return modules + "# data\n" + yaml.safe_dump(content.get("data", {}), sort_keys=True)
    return yaml.safe_dump(content, sort_keys=False, allow_unicode=True)
