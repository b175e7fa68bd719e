"""Demo users and runs for a first local start."""

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from controlplane.identity import ADMIN, AUDITOR, PLATFORM, REVIEWER, actor_for
from registry.models import Channel
from registry.services.bundles import bundle_apply, load_bundle_file
from registry.services.releases import (
    release_create,
    release_promote,
    release_record_evaluation,
    release_sign_off,
)
from runs.services import task_submit
from sandbox.seed import seed as seed_sandbox

BUNDLES_DIR = Path(__file__).resolve().parent / "bundles"

DEMO_PASSWORD_HINT = "local demo only; change them before sharing this instance"

# (username, role group or "" for a plain requester, password)
DEMO_USERS = (
    ("requester", "", "requester-demo-pass"),
    ("reviewer", REVIEWER, "reviewer-demo-pass"),
    ("reviewer2", REVIEWER, "reviewer2-demo-pass"),
    ("platform", PLATFORM, "platform-demo-pass"),
    ("auditor", AUDITOR, "auditor-demo-pass"),
    ("admin", ADMIN, "admin-demo-pass"),
)

# (workflow, case id, input): built-in intake runs; support cases on the staging release (a
# small refund that waits only for the irreversible CRM write, a large one that stops at the
# approval gate first, and a customer asking for a person); and data batches to review (a clean
# one, one with a null key and a negative amount that waits for a steward, one whose schema changed).
DEMO_CASES = (
    ("builtin.intake", "INTAKE-1", {"text": "The export page shows an error since this morning"}),
    ("builtin.intake", "INTAKE-2", {"text": "How do I add a second reviewer to my team?"}),
    ("support_case_resolution", "CASE-1001", {"text": "Please refund order #123: a refund of $120"}),
    (
        "support_case_resolution",
        "CASE-1002",
        {"text": "I want my money back for order #456, a refund of $750"},
    ),
    ("support_case_resolution", "CASE-1003", {"text": "I want to speak to a person about my order"}),
    (
        "data_pipeline_review",
        "orders_daily/2026-11-19",
        {"dataset": "orders_daily", "batch_id": "2026-11-19"},
    ),
    (
        "data_pipeline_review",
        "orders_daily/2026-11-20",
        {"dataset": "orders_daily", "batch_id": "2026-11-20"},
    ),
    (
        "data_pipeline_review",
        "orders_daily/2026-11-21",
        {"dataset": "orders_daily", "batch_id": "2026-11-21"},
    ),
)


SUPPORT = "support_case_resolution"


def _production_rollout(platform, signers) -> list[str]:
    """Production runs the staging release of the support workflow, with a second release (the
    response writer on a tuned model config) as a 10% canary; both passed their evaluation and
    were signed off by two reviewers, as a gated channel requires.

    Once: after that, production is whatever its users made of it (a rollback, another release,
    an evaluation that now fails a gate), and starting the app again leaves it so."""
    if Channel.objects.filter(workflow=SUPPORT, name="production").exists():
        return []
    actor = actor_for(platform)
    stable = Channel.objects.get(workflow=SUPPORT, name="staging").release
    bindings = {slug: dict(binding) for slug, binding in stable.manifest["agents"].items()}
    bindings["response_writer"]["model_config"] = "builtin-tuned"
    canary = release_create(
        spec={"workflow": SUPPORT, "policy_bundle": "default", "agents": bindings},
        author=platform,
        actor=actor,
    ).release
    for release in (stable, canary):
        if not release.evaluations.exists():
            release_record_evaluation(
                release=release,
                suite="support-regression",
                score=Decimal("0.96"),
                details={"cases": 120, "source": "demo"},
                recorded_by=platform,
                actor=actor,
            )
        for signer in signers:
            release_sign_off(
                release=release, user=signer, actor=actor_for(signer), comment="regression suite reviewed"
            )
    release_promote(release=stable, channel="production", actor=actor)
    release_promote(release=canary, channel="production", mode="canary", canary_percent=10, actor=actor)
    return [canary.id]


@dataclass(frozen=True)
class DemoResult:
    logins: list[tuple[str, str, str]]
    runs_created: int
    releases: list[str]


@transaction.atomic
def demo_load() -> DemoResult:
    """Idempotent: users are created once (passwords reset), the demo bundles are applied as
    release-as-code (nothing new the second time), runs are submitted once per case id."""
    users = {}
    for username, role, password in DEMO_USERS:
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.set_password(password)
        user.is_staff = user.is_superuser = role == ADMIN
        user.save()
        user.groups.set([Group.objects.get(name=role)] if role else [])
        users[username] = user
    releases = []
    for bundle_file in sorted(BUNDLES_DIR.glob("*.yaml")):
        report = bundle_apply(
            bundle=load_bundle_file(bundle_file),
            author=users["platform"],
            actor=actor_for(users["platform"]),
        )
        releases += report.releases
    releases += _production_rollout(users["platform"], [users["reviewer"], users["reviewer2"]])
    seed_sandbox()
    requester = users["requester"]
    runs_created = 0
    for workflow, case_id, payload in DEMO_CASES:
        submission = task_submit(
            requester=requester,
            actor=actor_for(requester),
            workflow=workflow,
            case_id=case_id,
            input=payload,
            idempotency_key=f"demo-{case_id}",
            channel="" if workflow.startswith("builtin.") else "staging",
        )
        runs_created += submission.created
    logins = [(username, role or "requester", password) for username, role, password in DEMO_USERS]
    return DemoResult(logins=logins, runs_created=runs_created, releases=releases)
