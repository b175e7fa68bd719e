"""The workflow metrics a release is judged by, from the runs Baton already records.

- completion rate: finished runs that succeeded;
- exception leakage: finished runs that ended in an exception a person must clean up
  (failed, dead-lettered, compensated, or held after a failed compensation);
- mean time to resolution: from submission to success;
- cost per completed task: model and tool cost of every run, plus reviewer time
  (REVIEWER_COST_PER_DECISION_USD per review), divided by the tasks completed;
- unsafe action rate: irreversible actions that policy denied or a reviewer rejected, per run.
  It is never averaged into a quality score: it is compared on its own.
"""

from dataclasses import asdict, dataclass

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, FloatField, Q, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, TruncDate

from approvals.models import ApprovalDecision
from policy.models import PolicyDecision
from runs.models import PendingAction, Run

LEAKED = (Run.Status.FAILED, Run.Status.DEAD_LETTERED, Run.Status.COMPENSATED, Run.Status.COMPENSATION_FAILED)
FINISHED = (*LEAKED, Run.Status.SUCCEEDED, Run.Status.REJECTED, Run.Status.CANCELLED)
IRREVERSIBLE = "irreversible"


@dataclass(frozen=True)
class WorkflowMetrics:
    runs: int
    finished: int
    completed: int
    leaked: int
    unsafe_actions: int
    reviews: int
    cost_usd: float
    resolution_seconds: float

    @property
    def completion_rate(self) -> float | None:
        return self.completed / self.finished if self.finished else None

    @property
    def exception_leakage(self) -> float | None:
        return self.leaked / self.finished if self.finished else None

    @property
    def mean_time_to_resolution_s(self) -> float | None:
        return self.resolution_seconds / self.completed if self.completed else None

    @property
    def cost_per_completed_usd(self) -> float | None:
        total = self.cost_usd + self.reviews * settings.REVIEWER_COST_PER_DECISION_USD
        return total / self.completed if self.completed else None

    @property
    def unsafe_action_rate(self) -> float | None:
        return self.unsafe_actions / self.runs if self.runs else None

    def as_dict(self) -> dict:
        rates = (
            "completion_rate",
            "exception_leakage",
            "mean_time_to_resolution_s",
            "cost_per_completed_usd",
        )
        return {
            **asdict(self),
            **{name: getattr(self, name) for name in rates},
            "unsafe_action_rate": self.unsafe_action_rate,
        }


def _run_totals():
    return {
        "runs": Count("pk"),
        "finished": Count("pk", filter=Q(status__in=FINISHED)),
        "completed": Count("pk", filter=Q(status=Run.Status.SUCCEEDED)),
        "leaked": Count("pk", filter=Q(status__in=LEAKED)),
        "cost_usd": Sum(Cast(KeyTextTransform("cost_usd", "spent"), FloatField())),
        "resolution": Sum(
            ExpressionWrapper(F("finished_at") - F("created_at"), output_field=DurationField()),
            filter=Q(status=Run.Status.SUCCEEDED),
        ),
    }


def workflow_metrics(runs: QuerySet[Run]) -> WorkflowMetrics:
    """The metrics of a set of runs, in four aggregate queries whatever their number."""
    totals = runs.aggregate(**_run_totals())
    return WorkflowMetrics(
        runs=totals["runs"],
        finished=totals["finished"],
        completed=totals["completed"],
        leaked=totals["leaked"],
        unsafe_actions=_unsafe_actions(runs),
        reviews=ApprovalDecision.objects.filter(pending_action__run__in=runs).count(),
        cost_usd=totals["cost_usd"] or 0.0,
        resolution_seconds=totals["resolution"].total_seconds() if totals["resolution"] else 0.0,
    )


def _unsafe_actions(runs: QuerySet[Run]) -> int:
    denied = PolicyDecision.objects.filter(
        decision_point="tool.call",
        allow=False,
        input__tool__side_effect=IRREVERSIBLE,
        trace_id__in=runs.values("trace_id"),
    ).count()
    rejected = PendingAction.objects.filter(
        run__in=runs, status=PendingAction.Status.REJECTED, risk__side_effect=IRREVERSIBLE
    ).count()
    return denied + rejected


def daily_series(runs: QuerySet[Run]) -> list[dict]:
    """Per day of submission: runs, completion rate and exception leakage."""
    rows = runs.annotate(day=TruncDate("created_at")).values("day").annotate(**_run_totals()).order_by("day")
    return [
        {
            "day": row["day"],
            "runs": row["runs"],
            "completion_rate": row["completed"] / row["finished"] if row["finished"] else None,
            "exception_leakage": row["leaked"] / row["finished"] if row["finished"] else None,
        }
        for row in rows
    ]
