"""Impact analysis: replay recorded decision inputs against a candidate bundle, before it is promoted."""

from collections import Counter
from dataclasses import dataclass, field

from .bundles import PolicyBundle
from .models import PolicyDecision
from .services import Decision, policy_evaluate, without_redacted

DEFAULT_SAMPLE = 1000


@dataclass(frozen=True)
class ChangedDecision:
    decision: PolicyDecision
    change: str  # allow→deny, deny→allow, approval added, approval removed
    candidate: Decision


@dataclass
class ImpactReport:
    evaluated: int = 0
    changes: list[ChangedDecision] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        return dict(Counter(change.change for change in self.changes))


def impact_analysis(candidate: PolicyBundle, *, limit: int = DEFAULT_SAMPLE, point: str = "") -> ImpactReport:
    """Which of the last `limit` decisions the candidate would decide differently.

    Inputs are replayed as logged: the fields the log redacts (a tool call's arguments, a task's
    input) are left out, as they are optional in every input, and so are not available to the
    candidate's rules.
    """
    decisions = PolicyDecision.objects.order_by("-created_at", "-pk")
    if point:
        decisions = decisions.filter(decision_point=point)
    report = ImpactReport()
    for recorded in decisions[:limit].iterator(chunk_size=500):
        report.evaluated += 1
        logged = without_redacted(recorded.decision_point, recorded.input)
        outcome = policy_evaluate(recorded.decision_point, logged, bundle=candidate)
        change = _change(recorded, outcome)
        if change:
            report.changes.append(ChangedDecision(recorded, change, outcome))
    return report


def _change(recorded: PolicyDecision, outcome: Decision) -> str:
    if recorded.allow != outcome.allow:
        return "allow→deny" if recorded.allow else "deny→allow"
    if recorded.require_approval != outcome.require_approval:
        return "approval added" if outcome.require_approval else "approval removed"
    return ""
