"""The policy engine's checks on registry use cases (registered into `registry.hooks`)."""

from functools import lru_cache
from typing import Any

from registry import hooks
from registry import workflow_definitions as wf
from registry.artifact_kinds import Problem
from registry.models import Agent, Artifact, Release

from .bundles import PolicyBundle, governance_bundle
from .engines import EngineError
from .engines.embedded import EmbeddedEngine
from .services import decision_input, policy_decide
from .testing import run_bundle_tests


def register() -> None:
    if bundle_problems not in hooks.publish_checks[Artifact.Kind.POLICY_BUNDLE]:
        hooks.publish_checks[Artifact.Kind.POLICY_BUNDLE].append(bundle_problems)
        hooks.promotion_checks.append(promotion_refusals)
        hooks.lifecycle_checks.append(lifecycle_refusals)


def bundle_problems(content: dict) -> list[Problem]:
    """A bundle is published only if it compiles with every decision point and its tests pass."""
    bundle = PolicyBundle.from_content("candidate", content)
    return _problems_by_digest(bundle.digest, bundle)


@lru_cache(maxsize=32)
def _problems_by_digest(digest: str, bundle: PolicyBundle) -> list[Problem]:
    """Same content, same digest, same verdict: a bundle's tests run once per process."""
    try:
        EmbeddedEngine().compile(bundle)
    except EngineError as error:
        return [Problem("$.modules", str(error)[:1000])]
    return [
        Problem("$.modules", f"test {result.name} failed: {result.detail or 'false'}"[:1000])
        for result in run_bundle_tests(bundle.modules, bundle.data)
        if not result.passed
    ]


def _subject(actor: Any) -> dict:
    return {
        "username": getattr(actor, "name", str(actor)),
        "kind": getattr(actor, "kind", "system"),
        "roles": sorted(getattr(actor, "roles", ())),
    }


def promotion_refusals(release: Release, channel: str, gated: bool, actor: Any) -> list[str]:
    workflow_pin = release.manifest["artifacts"]["workflow"][release.workflow]
    definition = Artifact.objects.get(
        kind=Artifact.Kind.WORKFLOW, name=release.workflow, version=workflow_pin["version"]
    ).content
    latest_by_suite: dict[str, float] = {}
    for suite, score in release.evaluations.order_by("created_at", "pk").values_list("suite", "score"):
        latest_by_suite[suite] = float(score)
    document = decision_input(
        "release.promote",
        release={
            "id": release.id,
            "workflow": release.workflow,
            "author": release.author.get_username(),
            "min_score": wf.min_eval_score(definition),
            "evaluations": [
                {"suite": suite, "score": score} for suite, score in sorted(latest_by_suite.items())
            ],
            "signoffs": sorted(release.signoffs.values_list("user__username", flat=True)),
            "retired_agents": sorted(
                release.agents.filter(status=Agent.Status.RETIRED).values_list("slug", flat=True)
            ),
        },
        channel={"name": channel, "gated": gated},
        actor=_subject(actor),
    )
    decision = policy_decide("release.promote", document, bundle=governance_bundle(), actor=actor)
    return [] if decision.allow else decision.reasons or ["denied by policy"]


def lifecycle_refusals(agent: Agent, to_status: str, reason: str, actor: Any) -> list[str]:
    document = decision_input(
        "agent.lifecycle",
        agent={
            "slug": agent.slug,
            "status": agent.status,
            "has_owner": agent.owner_team_id is not None,
            "has_runbook": bool(agent.runbook_url),
            "has_slos": agent.slo_p95_latency_ms is not None and agent.slo_success_rate is not None,
        },
        to=to_status,
        reason=reason,
        actor=_subject(actor),
    )
    decision = policy_decide("agent.lifecycle", document, bundle=governance_bundle(), actor=actor)
    return [] if decision.allow else decision.reasons or ["denied by policy"]
