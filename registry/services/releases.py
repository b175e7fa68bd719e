"""Releases (immutable pins), their promotion gates, channels and rollback."""

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from controlplane.audit import record
from controlplane.canonical import digest
from controlplane.errors import Conflict, Forbidden, InvalidInput

from .. import hooks
from .. import workflow_definitions as wf
from ..models import (
    Agent,
    Artifact,
    Channel,
    ChannelChange,
    Release,
    ReleaseAgent,
    ReleaseArtifact,
    ReleaseEvaluation,
    ReleaseSignOff,
)

GATED_CHANNELS = ("production",)
CHANNEL_NAME = re.compile(r"[a-z0-9][a-z0-9\-]{0,49}")
REQUIRED_SIGNOFFS = 2


@dataclass(frozen=True)
class ReleaseCreation:
    release: Release
    created: bool


def parse_ref(ref: str) -> tuple[str, int | None]:
    """'name@3' → ('name', 3); 'name' → ('name', None) meaning the latest version."""
    name, _, version = str(ref).partition("@")
    if version and not (version.isascii() and version.isdigit()):  # isdigit() alone takes '²'; int() does not
        raise InvalidInput(f"Bad artifact reference {ref!r}: the version after '@' must be a number.")
    return name, int(version) if version else None


class _Pinner:
    """Resolves names (and optional versions) to exact artifact versions, remembering each pin."""

    def __init__(self, explicit: dict[str, dict[str, int]]):
        self.explicit = explicit
        self.pinned: dict[tuple[str, str], Artifact] = {}
        self.errors: list[str] = []

    def pin(self, kind: str, ref: str) -> Artifact | None:
        name, version = parse_ref(ref)
        version = version or self.explicit.get(kind, {}).get(name)
        key = (kind, name)
        if key in self.pinned:
            if version and self.pinned[key].version != version:
                self.errors.append(f"{kind} {name!r} is pinned at two versions")
            return self.pinned[key]
        artifacts = Artifact.objects.filter(kind=kind, name=name)
        artifact = (artifacts.filter(version=version) if version else artifacts.order_by("-version")).first()
        if artifact is None:
            self.errors.append(f"unknown {kind} {ref!r}" + (f" at version {version}" if version else ""))
            return None
        self.pinned[key] = artifact
        return artifact

    def content(self, kind: str, name: str) -> dict | None:
        artifact = self.pin(kind, name)
        return artifact.content if artifact else None


def release_create(
    *, spec: dict[str, Any], author: AbstractBaseUser, actor: Any, notes: str = ""
) -> ReleaseCreation:
    """Pin everything `spec` needs; the same pins give the same release (no duplicate).

    spec: {workflow: "name[@v]", policy_bundle: "name[@v]",
           agents: {slug: {prompt: "name[@v]", model_config: "name[@v]"}}, pins: {kind: {name: version}}}
    """
    pinner = _Pinner(spec.get("pins") or {})
    workflow = pinner.pin(Artifact.Kind.WORKFLOW, spec["workflow"])
    if workflow is None:
        raise InvalidInput(f"Cannot make a release: {pinner.errors[0]}.")
    definition = workflow.content
    names = wf.referenced_names(definition)
    agents = {agent.slug: agent for agent in Agent.objects.filter(slug__in=names["agent"])}
    bindings = spec.get("agents") or {}
    unexpected = sorted(set(bindings) - names["agent"])
    if unexpected:
        pinner.errors.append(f"agents not used by the workflow: {', '.join(unexpected)}")
    for slug in sorted(_model_step_agents(definition)):
        binding = bindings.get(slug) or {}
        if not {"prompt", "model_config"} <= binding.keys():
            pinner.errors.append(f"agent {slug!r} runs a model step and needs a prompt and a model_config")
    for _slug, binding in sorted(bindings.items()):
        if "prompt" in binding:
            pinner.pin(Artifact.Kind.PROMPT, binding["prompt"])
        if "model_config" in binding:
            _pin_model_chain(pinner, binding["model_config"])
    for tool in sorted(names["tool"]):
        _pin_tool_closure(pinner, tool)
    for corpus in sorted(names["corpus"]):
        pinner.pin(Artifact.Kind.CORPUS, corpus)
    if "policy_bundle" not in spec:
        pinner.errors.append("a policy_bundle is required")
    else:
        pinner.pin(Artifact.Kind.POLICY_BUNDLE, spec["policy_bundle"])
    refs = wf.References(
        agent=agents.get,
        tool=lambda name: pinner.content(Artifact.Kind.TOOL, name),
        corpus=lambda name: pinner.content(Artifact.Kind.CORPUS, name),
    )
    problems = wf.reference_problems(definition, refs)
    errors = pinner.errors + [f"{problem.path}: {problem.message}" for problem in problems]
    if errors:
        raise InvalidInput(
            f"Cannot make a release of {workflow.name!r}: {errors[0]}.", errors={"release": errors}
        )
    manifest = _manifest(workflow.name, pinner.pinned.values(), bindings)
    manifest_digest = digest(manifest)
    existing = Release.objects.filter(digest=manifest_digest).first()
    if existing:
        return ReleaseCreation(existing, created=False)
    try:
        with transaction.atomic():
            release = Release.objects.create(
                id=Release.id_for(manifest_digest),
                workflow=workflow.name,
                digest=manifest_digest,
                manifest=manifest,
                notes=notes,
                author=author,
            )
            ReleaseArtifact.objects.bulk_create(
                ReleaseArtifact(release=release, artifact=artifact) for artifact in pinner.pinned.values()
            )
            ReleaseAgent.objects.bulk_create(
                ReleaseAgent(release=release, agent=agent) for agent in agents.values()
            )
            record(
                actor,
                "release.created",
                release,
                {"workflow": workflow.name, "digest": manifest_digest, "manifest": manifest},
                release_id=release.id,
            )
    except IntegrityError:
        return ReleaseCreation(Release.objects.get(digest=manifest_digest), created=False)
    return ReleaseCreation(release, created=True)


def _model_step_agents(definition: dict) -> set[str]:
    return {step["agent"] for step in definition["steps"] if "agent" in step and "tool" not in step}


def _pin_model_chain(pinner: _Pinner, ref: str) -> None:
    pending = [ref]
    while pending:
        config = pinner.pin(Artifact.Kind.MODEL_CONFIG, pending.pop())
        if config:
            pending += [
                name
                for name in config.content.get("fallback", [])
                if (Artifact.Kind.MODEL_CONFIG, name) not in pinner.pinned
            ]


def _pin_tool_closure(pinner: _Pinner, name: str) -> None:
    pending = [name]
    while pending:
        tool = pinner.pin(Artifact.Kind.TOOL, pending.pop())
        if tool:
            pending += [
                related
                for key in ("compensation_tool", "reconcile_lookup")
                if (related := tool.content.get(key)) and (Artifact.Kind.TOOL, related) not in pinner.pinned
            ]


def _manifest(workflow: str, artifacts, bindings: dict) -> dict:
    pinned: dict[str, dict] = {}
    for artifact in artifacts:
        pinned.setdefault(artifact.kind, {})[artifact.name] = {
            "version": artifact.version,
            "digest": artifact.digest,
        }
    agents = {
        slug: {key: parse_ref(ref)[0] for key, ref in sorted(binding.items())}
        for slug, binding in sorted(bindings.items())
    }
    return {"workflow": workflow, "artifacts": pinned, "agents": agents}


@transaction.atomic
def release_record_evaluation(
    *, release: Release, suite: str, score: Decimal, details: dict, recorded_by: AbstractBaseUser, actor: Any
) -> ReleaseEvaluation:
    if not Decimal(0) <= score <= Decimal(1):
        raise InvalidInput("An evaluation score is between 0 and 1.", errors={"score": ["Between 0 and 1."]})
    evaluation = ReleaseEvaluation.objects.create(
        release=release, suite=suite, score=score, details=details, recorded_by=recorded_by
    )
    record(actor, "release.evaluated", release, {"suite": suite, "score": str(score)}, release_id=release.id)
    return evaluation


@dataclass(frozen=True)
class SignOff:
    signoff: ReleaseSignOff
    created: bool  # False: this person had signed it off before, and that sign-off stands as it was


@transaction.atomic
def release_sign_off(*, release: Release, user: AbstractBaseUser, actor: Any, comment: str = "") -> SignOff:
    """A person vouches for a release, once; its author cannot (two-person rule)."""
    if user.pk == release.author_id:
        raise Forbidden("The author of a release cannot sign it off.")
    signoff, created = ReleaseSignOff.objects.get_or_create(
        release=release, user=user, defaults={"comment": comment}
    )
    if created:
        record(
            actor,
            "release.signed_off",
            release,
            {"user": user.get_username(), "comment": comment},
            release_id=release.id,
        )
    return SignOff(signoff, created)


def promotion_gate_problems(release: Release) -> list[str]:
    """Why the release may not go to a gated channel yet (empty when it may)."""
    problems = []
    workflow = release.manifest["artifacts"]["workflow"][release.workflow]
    definition = Artifact.objects.get(
        kind=Artifact.Kind.WORKFLOW, name=release.workflow, version=workflow["version"]
    ).content
    threshold = Decimal(str(wf.min_eval_score(definition)))
    latest_by_suite: dict[str, Decimal] = {}
    for evaluation in release.evaluations.order_by("created_at", "pk"):
        latest_by_suite[evaluation.suite] = evaluation.score
    if not latest_by_suite:
        problems.append("no evaluation results are attached")
    failing = sorted(suite for suite, score in latest_by_suite.items() if score < threshold)
    if failing:
        problems.append(f"evaluations below {threshold}: {', '.join(failing)}")
    signers = release.signoffs.exclude(user_id=release.author_id).count()
    if signers < REQUIRED_SIGNOFFS:
        problems.append(f"{signers} of {REQUIRED_SIGNOFFS} sign-offs by people other than the author")
    return problems + _retired_agent_problems(release)


def _retired_agent_problems(release: Release) -> list[str]:
    retired = sorted(release.agents.filter(status=Agent.Status.RETIRED).values_list("slug", flat=True))
    return [f"uses retired agents: {', '.join(retired)}"] if retired else []


def release_promote(
    *,
    release: Release,
    channel: str,
    actor: Any,
    mode: str = Channel.Mode.FULL,
    canary_percent: int | None = None,
    reason: str = "",
) -> Channel:
    """Point a channel of the release's workflow at it; the current release becomes the baseline.

    A refused promotion is recorded (with the policy decisions behind it) before it is raised.
    """
    if mode not in Channel.Mode.values:
        raise InvalidInput(
            f"Unknown rollout mode {mode!r}.", errors={"mode": [f"One of {Channel.Mode.values}."]}
        )
    if (mode == Channel.Mode.CANARY) != (canary_percent is not None):
        raise InvalidInput(
            "A canary needs canary_percent (1-99), and only a canary has one.",
            errors={"canary_percent": ["Required for canary mode only."]},
        )
    if canary_percent is not None and not 1 <= canary_percent <= 99:
        raise InvalidInput("canary_percent must be between 1 and 99.", errors={"canary_percent": ["1-99."]})
    if not CHANNEL_NAME.fullmatch(channel):
        raise InvalidInput(
            f"Bad channel name {channel!r}.", errors={"channel": ["Lower-case letters, digits, -."]}
        )
    with transaction.atomic():
        target = Channel.objects.select_for_update().filter(workflow=release.workflow, name=channel).first()
        gated = target.requires_gates if target else channel in GATED_CHANNELS
        problems = promotion_gate_problems(release) if gated else _retired_agent_problems(release)
        for check in hooks.promotion_checks:
            problems += [reason for reason in check(release, channel, gated, actor) if reason not in problems]
        if problems:
            # The refusal and the decisions behind it are kept; no channel is created for it.
            record(
                actor,
                "release.promotion_refused",
                release,
                {"channel": channel, "reasons": problems},
                release_id=release.id,
            )
        else:
            target = target or _channel_created(release.workflow, channel, requires_gates=gated)
            if (target.release_id, target.mode, target.canary_percent) != (release.id, mode, canary_percent):
                if target.release_id != release.id:
                    target.baseline_id = target.release_id
                target.release = release
                target.mode, target.canary_percent = mode, canary_percent
                target = _save_change(target, ChannelChange.Action.PROMOTE, actor, reason)
    if problems:
        raise Conflict(
            f"{release.id} cannot be promoted to {release.workflow}/{channel}: {'; '.join(problems)}.",
            errors={"gates": problems},
        )
    return target


def _channel_created(workflow: str, name: str, *, requires_gates: bool) -> Channel:
    """A new channel for its first promotion, or (locked) the one a promotion at the same moment made."""
    try:
        with transaction.atomic():
            return Channel.objects.create(workflow=workflow, name=name, requires_gates=requires_gates)
    except IntegrityError:
        # The other promotion has committed it (the unique constraint waited for that).
        return Channel.objects.select_for_update().get(workflow=workflow, name=name)


@transaction.atomic
def channel_rollback(*, channel: Channel, actor: Any, reason: str = "", from_release: str = "") -> Channel:
    """Point the channel back at its baseline in one step; the baseline's own baseline becomes next.

    `from_release`, when given, is the release the caller saw on the channel: a second click
    on a rollback button must not roll back a step further.
    """
    channel = Channel.objects.select_for_update().get(pk=channel.pk)
    if from_release and channel.release_id != from_release:
        raise Conflict(f"{channel} no longer points at {from_release}; nothing was rolled back.")
    if channel.baseline_id is None:
        raise Conflict(f"{channel} has no previous release to roll back to.")
    restored = channel.baseline_id
    earlier = (
        ChannelChange.objects.filter(channel=channel, release_id=restored)
        .order_by("-created_at", "-pk")
        .values_list("baseline_id", flat=True)
        .first()
    )
    channel.release_id, channel.baseline_id = restored, earlier
    channel.mode, channel.canary_percent = Channel.Mode.FULL, None
    return _save_change(channel, ChannelChange.Action.ROLLBACK, actor, reason)


def _save_change(channel: Channel, action: str, actor: Any, reason: str) -> Channel:
    channel.updated_at = Now()
    channel.save()
    channel.refresh_from_db()
    ChannelChange.objects.create(
        channel=channel,
        action=action,
        release_id=channel.release_id,
        baseline_id=channel.baseline_id,
        mode=channel.mode,
        canary_percent=channel.canary_percent,
        actor=str(actor),
        reason=reason,
    )
    record(
        actor,
        f"channel.{'promoted' if action == ChannelChange.Action.PROMOTE else 'rolled_back'}",
        channel,
        {
            "workflow": channel.workflow,
            "channel": channel.name,
            "release": channel.release_id,
            "baseline": channel.baseline_id,
            "mode": channel.mode,
            "canary_percent": channel.canary_percent,
            "reason": reason,
        },
        release_id=channel.release_id or "",
    )
    return channel
