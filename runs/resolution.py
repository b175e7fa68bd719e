"""Which release a new task runs: an explicit one, or its channel's, honouring canary and shadow."""

from dataclasses import dataclass
from typing import Any

from django.db.models import Q

from controlplane.canonical import digest
from controlplane.errors import Forbidden, InvalidInput
from policy.services import Decision, decision_input, policy_decide
from registry.models import Agent, Channel, Release

from .engine.released import ReleasedWorkflow

DEFAULT_CHANNEL = "production"


@dataclass(frozen=True)
class Resolution:
    release: Release
    channel: str
    shadow_release_id: str


def resolve_release(
    *, workflow: str, channel: str, release_id: str, case_id: str, any_release: bool = False
) -> Resolution:
    """`any_release`: the caller may name a release that no channel serves (platform engineers
    trying a candidate); others may name only one a channel serves or keeps as its baseline, or
    a release that passed no promotion, and whose policy bundle decides its own run, would run."""
    if release_id:
        release = Release.objects.filter(pk=release_id, workflow=workflow).first()
        if release is None:
            raise InvalidInput(
                f"No release {release_id!r} of workflow {workflow!r}.",
                errors={"release": ["Unknown release for this workflow."]},
            )
        if not any_release and not _served_by_a_channel(release):
            raise Forbidden(
                f"Release {release_id} is on no channel: only platform engineers may run it by its id."
            )
        return Resolution(release, "", "")
    name = channel or DEFAULT_CHANNEL
    target = (
        Channel.objects.select_related("release", "baseline").filter(workflow=workflow, name=name).first()
    )
    if target is None or target.release is None:
        known = sorted(
            Channel.objects.filter(workflow=workflow, release__isnull=False).values_list("name", flat=True)
        )
        raise InvalidInput(
            f"Workflow {workflow!r} has no release on channel {name!r}"
            + (
                f"; channels with a release: {', '.join(known)}."
                if known
                else "; it has no released channel."
            ),
            errors={"channel": [f"No release on {name!r}."]},
        )
    if (
        target.mode == Channel.Mode.CANARY
        and target.baseline
        and canary_bucket(case_id) >= target.canary_percent
    ):
        return Resolution(target.baseline, name, "")
    if target.mode == Channel.Mode.SHADOW and target.baseline:
        return Resolution(target.baseline, name, target.release_id)
    return Resolution(target.release, name, "")


def _served_by_a_channel(release: Release) -> bool:
    serving = Q(release=release) | Q(baseline=release)
    return Channel.objects.filter(serving, workflow=release.workflow).exists()


def canary_bucket(case_id: str) -> int:
    """0-99, stable per case: the same case always lands on the same side of a canary."""
    return int(digest({"case": case_id})[:8], 16) % 100


def start_decision(
    *,
    actor: Any,
    released: ReleasedWorkflow,
    channel: str,
    case_id: str,
    sensitivity: str,
    budget: dict,
    deadline: float | None,
    task_input: dict,
    trace_id: str,
) -> Decision:
    agents = Agent.objects.filter(releases__id=released.release_id).order_by("slug")
    document = decision_input(
        "run.start",
        subject={
            "username": getattr(actor, "name", str(actor)),
            "kind": getattr(actor, "kind", "user"),
            "roles": sorted(getattr(actor, "roles", ())),
        },
        workflow={
            "name": released.definition["workflow"],
            "release_id": released.release_id,
            "channel": channel,
            "agents": [
                {
                    "slug": a.slug,
                    "status": a.status,
                    "data_classification": a.data_classification,
                    "allowed_tools": {t["tool"]: t["scope"] for t in a.allowed_tools},
                }
                for a in agents
            ],
        },
        task={
            "case_id": case_id,
            "sensitivity": sensitivity,
            "budget": budget,
            "deadline": deadline,
            "input": task_input,
        },
    )
    return policy_decide("run.start", document, bundle=released.policy, actor=actor, trace_id=trace_id)
