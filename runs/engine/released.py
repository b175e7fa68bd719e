"""A release as the engine needs it: the workflow definition and every pinned artifact's content."""

from dataclasses import dataclass
from functools import lru_cache

from policy.bundles import PolicyBundle, bundle_from_artifact
from registry import workflow_definitions as wf
from registry.models import Artifact, Release


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
