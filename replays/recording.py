"""What a finished run recorded, read back for replay: its steps with their outputs, the policy
decisions taken for it, the human decisions on its requests, and how it ended.

Everything comes from what the engine already keeps (checkpoints, the decision log, pending
actions, the audit ledger); a replay reads it once, in a fixed number of queries.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.models import AuditEvent
from policy.models import PolicyDecision
from runs.models import PendingAction, Run
from runs.selectors import inlined, stored_payloads

# How a run's status reads as the end of a replay: a compensated run failed, and so on.
END_OF_STATUS = {
    Run.Status.SUCCEEDED: "succeeded",
    Run.Status.REJECTED: "rejected",
    Run.Status.FAILED: "failed",
    Run.Status.COMPENSATING: "failed",
    Run.Status.COMPENSATED: "failed",
    Run.Status.COMPENSATION_FAILED: "failed",
    Run.Status.DEAD_LETTERED: "dead_lettered",
    Run.Status.WAITING_APPROVAL: "waiting_approval",
    Run.Status.CANCELLED: "cancelled",
    Run.Status.QUEUED: "running",
    Run.Status.RUNNING: "running",
}
# Ends that stop a run at a step whose output was never recorded: a replay stops there too.
UNRECORDED_ENDS = {"dead_lettered", "cancelled", "running", "waiting_approval", "failed"}


@dataclass(frozen=True)
class RecordedStep:
    sequence: int
    state: str
    output: Any
    details: dict
    started_at: datetime
    finished_at: datetime
    next_state: str | None
    why: str


@dataclass(frozen=True)
class RecordedDecision:
    point: str
    subject: str  # the tool called, or "from -> to"
    allow: bool
    require_approval: bool
    reasons: list[str]
    input: dict  # as logged: sensitive fields redacted

    def as_dict(self) -> dict:
        return {
            "point": self.point,
            "subject": self.subject,
            "allow": self.allow,
            "require_approval": self.require_approval,
            "reasons": self.reasons,
        }


@dataclass
class Recording:
    run: Run
    steps: list[RecordedStep]
    decisions: list[RecordedDecision]
    human_decisions: list[tuple[str, str, dict]]  # (state, approved / rejected / expired, proposed action)
    # A step that answered and then failed (a forbidden or denied transition) has no checkpoint:
    # its answer is kept with the failure event instead.
    failed_steps: dict[str, RecordedStep] = field(default_factory=dict)
    end: str = ""
    end_state: str = ""
    error: str = ""

    def outputs_of(self, state: str) -> list[RecordedStep]:
        return [step for step in self.steps if step.state == state]

    def last_decision(self, point: str, subject: str) -> RecordedDecision | None:
        matching = [d for d in self.decisions if d.point == point and d.subject == subject]
        return matching[-1] if matching else None

    def human_decision(self, state: str, proposed: dict) -> str | None:
        """What a person decided on exactly this proposed action at `state`, if anyone did."""
        for decided_state, status, action in reversed(self.human_decisions):
            if decided_state == state and action == proposed:
                return status
        return None


def recording_of(run: Run) -> Recording:
    checkpoints = list(run.checkpoints.order_by("sequence"))
    events = list(
        AuditEvent.objects.filter(
            run_id=str(run.pk), action__in=["run.step.completed", "run.failed", "run.compensating"]
        ).order_by("seq")
    )
    moves = {e.payload.get("sequence"): e.payload for e in events if e.action == "run.step.completed"}
    failures = [e.payload for e in events if e.action != "run.step.completed"]
    failed = [e for e in events if e.action != "run.step.completed" and "output" in e.payload]
    stored = stored_payloads([c.output for c in checkpoints] + [f.payload["output"] for f in failed])
    steps = [
        RecordedStep(
            sequence=checkpoint.sequence,
            state=checkpoint.state,
            output=inlined(checkpoint.output, stored),
            details=checkpoint.details,
            started_at=checkpoint.started_at,
            finished_at=checkpoint.finished_at,
            next_state=moves.get(checkpoint.sequence, {}).get("next_state") or None,
            why=moves.get(checkpoint.sequence, {}).get("why", ""),
        )
        for checkpoint in checkpoints
    ]
    failed_steps = {
        f.payload["state"]: RecordedStep(
            sequence=len(checkpoints) + 1,
            state=f.payload["state"],
            output=inlined(f.payload["output"], stored),
            details=f.payload.get("details", {}),
            started_at=f.created_at,
            finished_at=f.created_at,
            next_state=None,
            why="",
        )
        for f in failed
    }
    return Recording(
        run=run,
        steps=steps,
        decisions=_decisions(run),
        human_decisions=_human_decisions(run),
        failed_steps=failed_steps,
        end=END_OF_STATUS[run.status],
        end_state=failures[-1]["state"] if failures else run.current_state,
        error=run.error,
    )


def _decisions(run: Run) -> list[RecordedDecision]:
    rows = PolicyDecision.objects.filter(
        run_id=str(run.pk), decision_point__in=["tool.call", "step.transition"]
    ).order_by("created_at", "pk")
    return [
        RecordedDecision(
            point=row.decision_point,
            subject=decision_subject(row.decision_point, row.input),
            allow=row.allow,
            require_approval=row.require_approval,
            reasons=list(row.reasons),
            input=row.input,
        )
        for row in rows
    ]


def decision_subject(point: str, document: dict) -> str:
    if point == "tool.call":
        return document.get("tool", {}).get("name", "")
    return f"{document.get('from', '')} -> {document.get('to', '')}"


def _human_decisions(run: Run) -> list[tuple[str, str, dict]]:
    decided = PendingAction.objects.filter(
        run=run,
        status__in=[
            PendingAction.Status.APPROVED,
            PendingAction.Status.REJECTED,
            PendingAction.Status.EXPIRED,
        ],
    ).order_by("created_at", "pk")
    return [(p.state, p.status, p.proposed_action) for p in decided]
