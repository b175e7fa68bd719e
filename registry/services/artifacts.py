"""Publishing artifact versions: validated, content-addressed, immutable."""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from controlplane.audit import record
from controlplane.canonical import CanonicalizationError, digest
from controlplane.errors import Conflict, InvalidInput

from .. import hooks
from .. import workflow_definitions as wf
from ..artifact_kinds import NAME_RE, Problem, content_problems
from ..models import Agent, Artifact

PUBLISH_ATTEMPTS = 3


@dataclass(frozen=True)
class Publication:
    artifact: Artifact
    created: bool


def artifact_publish(
    *, kind: str, name: str, content: Any, author: AbstractBaseUser, actor: Any
) -> Publication:
    """Publish `content` as the next version of `name`; the same content as the latest is a no-op.

    Workflow content may be YAML/JSON source text or already-parsed data; it is stored in
    its normalised form.
    """
    if kind not in Artifact.Kind.values:
        raise InvalidInput(
            f"Unknown artifact kind {kind!r}.", errors={"kind": [f"One of {Artifact.Kind.values}."]}
        )
    if not NAME_RE.fullmatch(name or ""):
        raise InvalidInput(
            "Artifact names are lower-case letters, digits, '.', '_' and '-'.",
            errors={"name": ["Invalid name."]},
        )
    if kind == Artifact.Kind.WORKFLOW:
        content = _checked_workflow(name, content)
    else:
        raise_problems(content_problems(kind, content), f"{kind} {name!r}")
        for check in hooks.publish_checks[kind]:
            raise_problems(check(content), f"{kind} {name!r}")
    try:
        content_digest = digest(content)
    except CanonicalizationError as error:
        raise InvalidInput(f"The content cannot be canonicalised: {error}") from error
    # Two publications of one name at once can pick the same next version; the one the unique
    # constraint refuses looks again, and then sees the other's version (its own content, or
    # the version to publish after).
    attempts_left = PUBLISH_ATTEMPTS
    while True:
        try:
            return _publish_next_version(kind, name, content, content_digest, author, actor)
        except IntegrityError as error:
            attempts_left -= 1
            if not attempts_left:
                raise Conflict(
                    f"Other versions of {kind} {name!r} were being published at the same moment; retry."
                ) from error


@transaction.atomic
def _publish_next_version(
    kind: str, name: str, content: Any, content_digest: str, author: AbstractBaseUser, actor: Any
) -> Publication:
    latest = Artifact.objects.select_for_update().filter(kind=kind, name=name).order_by("-version").first()
    if latest and latest.digest == content_digest:
        return Publication(latest, created=False)
    artifact = Artifact.objects.create(
        kind=kind,
        name=name,
        version=(latest.version + 1) if latest else 1,
        content=content,
        digest=content_digest,
        author=author,
    )
    record(
        actor,
        "artifact.published",
        artifact,
        {"kind": kind, "name": name, "version": artifact.version, "digest": content_digest},
    )
    return Publication(artifact, created=True)


def _checked_workflow(name: str, content: Any) -> dict:
    if isinstance(content, str):
        content, problems = wf.load_source(content)
        raise_problems(problems, f"workflow {name!r}")
    definition = wf.normalise(content)
    raise_problems(wf.structure_problems(definition), f"workflow {name!r}")
    if definition["workflow"] != name:
        raise_problems(
            [Problem("$.workflow", f"the definition is named {definition['workflow']!r}, not {name!r}")],
            f"workflow {name!r}",
        )
    raise_problems(wf.reference_problems(definition, registry_references()), f"workflow {name!r}")
    return definition


def registry_references() -> wf.References:
    """Look references up in the registry as it is now (latest published versions)."""

    def latest_content(kind: str, name: str) -> dict | None:
        artifact = Artifact.objects.filter(kind=kind, name=name).order_by("-version").only("content").first()
        return artifact.content if artifact else None

    return wf.References(
        agent=lambda slug: Agent.objects.filter(slug=slug).first(),
        tool=lambda name: latest_content(Artifact.Kind.TOOL, name),
        corpus=lambda name: latest_content(Artifact.Kind.CORPUS, name),
    )


def raise_problems(problems: list[Problem], what: str) -> None:
    if problems:
        first = problems[0]
        raise InvalidInput(
            f"{what} is invalid at {first.path}: {first.message}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            errors={"problems": [problem.as_dict() for problem in problems]},
        )
