"""Policy bundles as the engines see them: modules, data, and the digest that names them."""

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from controlplane.canonical import digest
from registry.models import Artifact

SHIPPED_DEFAULT = Path(__file__).resolve().parent / "bundles" / "default"
# Built-ins that reach outside the decision (the network, the engine's environment): a policy
# decides on its input and data alone, and a draft bundle evaluated on OPA must not make the
# OPA server send requests. Rego calls a built-in by its name only, so the name is enough.
_REACHING_OUTSIDE = re.compile(r"\b(http\.send|net\.lookup_ip_addr|opa\.runtime)\b")


def outside_reaching_calls(bundle: "PolicyBundle") -> list[str]:
    """`module: built-in` for each built-in in the bundle that reaches outside the decision."""
    return [
        f"{name}: {found}"
        for name, source in sorted(bundle.modules.items())
        for found in sorted(set(_REACHING_OUTSIDE.findall(source)))
    ]


@dataclass(frozen=True)
class PolicyBundle:
    name: str
    modules: dict[str, str] = field(hash=False)
    data: dict = field(hash=False)
    digest: str = ""
    version: int | None = None

    @classmethod
    def from_content(cls, name: str, content: dict, version: int | None = None) -> "PolicyBundle":
        content = {"modules": content["modules"], "data": content.get("data", {})}
        return cls(
            name=name,
            modules=content["modules"],
            data=content["data"],
            digest=digest(content),
            version=version,
        )

    @property
    def content(self) -> dict:
        return {"modules": self.modules, "data": self.data}


def bundle_from_dir(path: Path, name: str | None = None) -> PolicyBundle:
    modules = {module.name: module.read_text() for module in sorted(path.glob("*.rego"))}
    data_file = path / "data.json"
    data = json.loads(data_file.read_text()) if data_file.exists() else {}
    return PolicyBundle.from_content(name or path.name, {"modules": modules, "data": data})


@lru_cache(maxsize=1)
def shipped_default_bundle() -> PolicyBundle:
    return bundle_from_dir(SHIPPED_DEFAULT, name="default")


def bundle_from_artifact(artifact: Artifact) -> PolicyBundle:
    return PolicyBundle.from_content(artifact.name, artifact.content, version=artifact.version)


def governance_bundle() -> PolicyBundle:
    """The bundle for control-plane decisions (promotion, lifecycle): the newest published
    version of POLICY_GOVERNANCE_BUNDLE, or the default bundle Baton ships until one is published."""
    artifact = (
        Artifact.objects.filter(kind=Artifact.Kind.POLICY_BUNDLE, name=settings.POLICY_GOVERNANCE_BUNDLE)
        .order_by("-version")
        .first()
    )
    return bundle_from_artifact(artifact) if artifact else shipped_default_bundle()


def bundle_by_ref(ref: str) -> PolicyBundle | None:
    """'name' (newest) or 'name@version' of a published bundle."""
    name, _, version = ref.partition("@")
    artifacts = Artifact.objects.filter(kind=Artifact.Kind.POLICY_BUNDLE, name=name)
    if version:
        if not (version.isascii() and version.isdigit()):  # str.isdigit() also takes '²', which int() refuses
            return None
        artifacts = artifacts.filter(version=int(version))
    artifact = artifacts.order_by("-version").first()
    return bundle_from_artifact(artifact) if artifact else None
