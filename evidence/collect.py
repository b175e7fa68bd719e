"""What the evidence says about a run: the six questions an auditor asks, from records Baton keeps.

1. Who requested the action?     2. Which version ran?        3. What data and corpus did it use?
4. Which policy checks passed?   5. Who approved it?          6. How is it undone?

Each answer names the NIST SP 800-53 controls it supports. Runs are read in batches with a
fixed number of queries per batch, so an export of any size runs in bounded memory.
"""

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Prefetch, Q, QuerySet

from approvals.models import ApprovalDecision
from controlplane.canonical import digest
from controlplane.models import AuditEvent
from policy.models import PolicyDecision
from registry.models import Release
from runs.models import Effect, PendingAction, Run

BATCH_SIZE = 100

CONTROLS = {
    "AC-5": "Separation of duties: neither the requester nor the agent may approve; approver groups decide.",
    "AC-6": "Least privilege: every start, step and tool call is checked by policy against the agent's scope",
    "AU-9": "Protection of audit information: append-only, hash-chained ledger with signed checkpoints.",
    "AU-10": "Non-repudiation: requester and approver identities bound into a signed package.",
    "AU-12": "Audit record generation: every transition, decision, approval and effect is recorded.",
    "CM-3": "Configuration change control: the exact release, manifest digest and corpus versions that ran.",
    "IR-4": "Incident handling: side effects carry idempotency keys and the compensation that undoes them.",
    "SI-10": "Information input validation: inputs and policy documents validated against versioned schemas.",
}

SECTION_CONTROLS = {
    "requester": ["AU-10", "AC-6"],
    "release": ["CM-3"],
    "data": ["CM-3", "SI-10"],
    "policy": ["AC-6", "SI-10"],
    "approvals": ["AC-5", "AU-10"],
    "effects": ["IR-4"],
    "audit_trail": ["AU-9", "AU-12"],
}

APPROVAL_ACTIONS = ("run.approved", "run.rejected")


@dataclass(frozen=True)
class Scope:
    """Which runs an export covers: one run, one release's runs, or the runs started in a window."""

    run_id: str = ""
    release_id: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def runs(self) -> QuerySet[Run]:
        runs = Run.objects.all()
        if self.run_id:
            runs = runs.filter(pk=self.run_id)
        if self.release_id:
            runs = runs.filter(release_id=self.release_id)
        if self.since:
            runs = runs.filter(created_at__gte=self.since)
        if self.until:
            runs = runs.filter(created_at__lt=self.until)
        return runs.select_related("requested_by").order_by("created_at", "pk")

    @classmethod
    def from_dict(cls, scope: dict) -> "Scope":
        return cls(
            run_id=scope.get("run") or "",
            release_id=scope.get("release") or "",
            since=datetime.fromisoformat(scope["since"]) if scope.get("since") else None,
            until=datetime.fromisoformat(scope["until"]) if scope.get("until") else None,
        )

    def as_dict(self) -> dict:
        return {
            "run": self.run_id or None,
            "release": self.release_id or None,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


def run_evidence(runs: Iterable[Run]) -> Iterator[dict]:
    """The evidence of each run, batch by batch."""
    batch: list[Run] = []
    for run in runs:
        batch.append(run)
        if len(batch) == BATCH_SIZE:
            yield from _batch_evidence(batch)
            batch = []
    if batch:
        yield from _batch_evidence(batch)


def release_evidence(release: Release) -> dict:
    """The release itself: manifest, evaluations and sign-offs (CM-3)."""
    return {
        "id": release.id,
        "workflow": release.workflow,
        "manifest_digest": release.digest,
        "manifest": release.manifest,
        "author": release.author.get_username(),
        "created_at": release.created_at.isoformat(),
        "evaluations": [
            {
                "suite": e.suite,
                "score": str(e.score),
                "by": e.recorded_by.get_username(),
                "at": e.created_at.isoformat(),
            }
            for e in release.evaluations.select_related("recorded_by").order_by("created_at")
        ],
        "signoffs": [
            {"by": s.user.get_username(), "comment": s.comment, "at": s.created_at.isoformat()}
            for s in release.signoffs.select_related("user").order_by("created_at")
        ],
        "controls": ["CM-3"],
    }


def _batch_evidence(batch: list[Run]) -> Iterator[dict]:
    run_ids = [str(run.pk) for run in batch]
    releases = Release.objects.in_bulk({run.release_id for run in batch if run.release_id})
    decisions = _decisions_by_run(batch, run_ids)
    events = _by_run(AuditEvent.objects.filter(run_id__in=run_ids).order_by("seq"))
    effects = _by_run(Effect.objects.filter(run_id__in=run_ids).order_by("pk"))
    pending = _by_run(
        PendingAction.objects.filter(run_id__in=run_ids)
        .prefetch_related(
            Prefetch("decisions", ApprovalDecision.objects.select_related("reviewer").order_by("pk"))
        )
        .order_by("pk")
    )
    for run in batch:
        key = str(run.pk)
        yield _one_run(
            run, releases.get(run.release_id), decisions[key], events[key], effects[key], pending[key]
        )


def _by_run(queryset: QuerySet) -> defaultdict:
    """Rows grouped by run id as text (the ledgers keep it as text, the run tables as a UUID)."""
    groups: defaultdict = defaultdict(list)
    for row in queryset:
        groups[str(row.run_id)].append(row)
    return groups


def _decisions_by_run(batch: list[Run], run_ids: list[str]) -> defaultdict:
    """Each run's policy decisions, with its `run.start`, taken before the run existed: it shares
    the run's trace."""
    run_of_trace = {run.trace_id: str(run.pk) for run in batch}
    decisions = PolicyDecision.objects.filter(
        Q(run_id__in=run_ids) | Q(run_id="", decision_point="run.start", trace_id__in=list(run_of_trace))
    ).order_by("pk")
    groups: defaultdict = defaultdict(list)
    for decision in decisions:
        groups[decision.run_id or run_of_trace[decision.trace_id]].append(decision)
    return groups


def _one_run(run, release, decisions, events, effects, pending) -> dict:
    requester = run.requested_by.get_username()
    created = next((event for event in events if event.action == "run.created"), None)
    manifest = release.manifest if release else {}
    return {
        "run": {
            "id": str(run.pk),
            "workflow": run.workflow,
            "status": run.status,
            "case_id": run.case_id,
            "created_at": run.created_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "trace_id": run.trace_id,
        },
        "requester": {
            "question": "Who requested the action?",
            "user": requester,
            "actor": created.actor if created else f"user:{requester}",
            "idempotency_key": run.idempotency_key,
            "request_digest": run.request_digest,
            "controls": SECTION_CONTROLS["requester"],
        },
        "release": {
            "question": "Which version ran?",
            "release_id": run.release_id,
            "manifest_digest": release.digest if release else None,
            "workflow_version": run.workflow_version,
            "channel": run.channel,
            "shadow_release_id": run.shadow_release_id or None,
            "artifacts": manifest.get("artifacts", {}),
            "controls": SECTION_CONTROLS["release"],
        },
        "data": {
            "question": "What data and corpus did it use?",
            "input_digest": digest(run.input),
            "sensitivity": run.sensitivity,
            "corpora": manifest.get("artifacts", {}).get("corpus", {}),
            "controls": SECTION_CONTROLS["data"],
        },
        "policy": {
            "question": "Which policy checks passed?",
            "decisions": [
                {
                    "id": d.pk,
                    "decision_point": d.decision_point,
                    "allow": d.allow,
                    "require_approval": d.require_approval,
                    "reasons": d.reasons,
                    "failure": d.failure or None,
                    "bundle": d.bundle_name,
                    "bundle_digest": d.bundle_digest,
                    "input_digest": d.input_digest,
                    "engine": d.engine,
                    "at": d.created_at.isoformat(),
                }
                for d in decisions
            ],
            "controls": SECTION_CONTROLS["policy"],
        },
        "approvals": {
            "question": "Who approved it?",
            "requests": [
                {
                    "id": p.pk,
                    "state": p.state,
                    "status": p.status,
                    "reasons": p.reasons,
                    "proposed_action": p.proposed_action,
                    "action_hash": p.action_hash,
                    "approvers": p.approvers,
                    "quorum": p.quorum,
                    "created_at": p.created_at.isoformat(),
                    "decided_at": p.decided_at.isoformat() if p.decided_at else None,
                    "reviews": [
                        {
                            "reviewer": review.reviewer.get_username(),
                            "decision": review.decision,
                            "reason": review.reason,
                            "approver_group": review.approver_group,
                            "action_hash": review.action_hash,
                            "policy_decision": review.policy_decision_id,
                            "credential": review.credential or None,
                            "at": review.created_at.isoformat(),
                        }
                        for review in p.decisions.all()
                    ],
                }
                for p in pending
            ],
            "decisions": [
                {
                    "actor": e.actor,
                    "decision": e.action.removeprefix("run."),
                    "reason": e.payload.get("reason", ""),
                    "action_hash": e.payload.get("action_hash"),
                    "at": e.created_at.isoformat(),
                    "audit_seq": e.seq,
                }
                for e in events
                if e.action in APPROVAL_ACTIONS
            ],
            "controls": SECTION_CONTROLS["approvals"],
        },
        "effects": {
            "question": "How is it undone?",
            "effects": [
                {
                    "state": e.state,
                    "tool": e.tool,
                    "idempotency_key": e.idempotency_key,
                    "status": e.status,
                    "effect_id": e.effect_id,
                    "compensation_tool": e.compensation_tool or None,
                    "compensation_result": e.compensation_result,
                }
                for e in effects
            ],
            "controls": SECTION_CONTROLS["effects"],
        },
        "audit_trail": {
            "events": [
                {
                    "seq": e.seq,
                    "at": e.created_at.isoformat(),
                    "actor": e.actor,
                    "action": e.action,
                    "payload_digest": e.payload_digest,
                    "hash": e.hash,
                }
                for e in events
            ],
            "controls": SECTION_CONTROLS["audit_trail"],
        },
    }
