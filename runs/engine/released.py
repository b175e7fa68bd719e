"""A release as the engine needs it: the workflow definition and every pinned artifact's content."""

from dataclasses import dataclass
from functools import lru_cache

from policy.bundles import PolicyBundle, bundle_from_artifact
from registry import workflow_definitions as wf
from registry.models import Artifact, Release

from ..providers.openai_compatible import DEFAULT_TIMEOUT_S as HTTP_MODEL_TIMEOUT_S

DEFAULT_TOOL_TIMEOUT_S = 10.0
# What one model call may take when its config does not say: the built-in provider answers at once.
_MODEL_TIMEOUT_S = {"builtin": 0.0, "openai_compatible": HTTP_MODEL_TIMEOUT_S}


@dataclass(frozen=True)
class ReleasedWorkflow:
    release_id: str
    definition: dict
    artifacts: dict  # kind -> name -> content, exactly as pinned
    agents: dict  # slug -> {prompt, model_config}
    policy: PolicyBundle

    def step_index(self, name: str) -> int:
        return next(i for i, step in enumerate(self.definition["steps"]) if step["name"] == name)

    def step(self, name: str) -> dict:
        return self.definition["steps"][self.step_index(name)]

    def allowed_next(self, name: str) -> list[str]:
        return wf.next_states(self.definition, self.step_index(name))

    @property
    def first_state(self) -> str:
        return self.definition["steps"][0]["name"]

    def tool(self, name: str) -> dict:
        return self.artifacts["tool"][name]

    def step_time_limit(self, step: dict) -> float:
        """The longest a step's calls may take, in seconds: a tool's call and its reconcile
        lookup, or its model chain's calls one after another and one repair. A map step's
        branches hold leases of their own; a gate calls nothing."""
        if "map" in step:
            return 0.0
        if "tool" in step:
            return 2 * step.get("timeout_s", DEFAULT_TOOL_TIMEOUT_S)
        if "agent" in step:
            binding = self.agents.get(step["agent"], {})
            chain = self.model_chain(step.get("model_config") or binding["model_config"])
            timeouts = [config.get("timeout_s", _MODEL_TIMEOUT_S[config["provider"]]) for _, config in chain]
            return sum(timeouts) + timeouts[0]
        return 0.0

    def model_chain(self, config_name: str) -> list[tuple[str, dict]]:
        """The model config and its fallbacks, in order, each as pinned by the release."""
        chain, pending = [], [config_name]
        while pending:
            name = pending.pop(0)
            if name in dict(chain):
                continue
            config = self.artifacts["model_config"][name]
            chain.append((name, config))
            pending += config.get("fallback", [])
        return chain


@lru_cache(maxsize=64)
def released_workflow(release_id: str) -> ReleasedWorkflow:
    """Releases are immutable, so what is loaded once stays true."""
    release = Release.objects.get(pk=release_id)
    artifacts: dict[str, dict] = {}
    policy = None
    for artifact in release.artifacts.all():
        artifacts.setdefault(artifact.kind, {})[artifact.name] = artifact.content
        if artifact.kind == Artifact.Kind.POLICY_BUNDLE:
            policy = bundle_from_artifact(artifact)
    return ReleasedWorkflow(
        release_id=release.id,
        definition=artifacts["workflow"][release.workflow],
        artifacts=artifacts,
        agents=release.manifest["agents"],
        policy=policy,
    )
