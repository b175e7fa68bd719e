"""Prometheus metrics at /metrics, read from the database and the shared circuit state.

Workers are many processes on many hosts; what they did is in PostgreSQL (checkpoints, the
decision log, the audit ledger) and the circuit breakers' state is in Redis, so one scrape
of any web process sees the whole deployment. Counters count rows of tables that Baton never
deletes from, so they only ever grow.
"""

from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from controlplane.models import AuditEvent
from policy.models import PolicyDecision
from runs.models import PendingAction, Run, StepCheckpoint
from runs.providers.breaker import shared_circuit_states

STEP_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class BatonCollector(Collector):
    def collect(self):
        yield from _runs()
        yield from _steps()
        yield from _ledger_counters()
        yield from _policy()
        yield from _approvals()
        yield from _circuits()


def _runs():
    runs = GaugeMetricFamily("baton_runs", "Runs by workflow and status.", labels=["workflow", "status"])
    for row in Run.objects.values("workflow", "status").annotate(n=Count("pk")).order_by():
        runs.add_metric([row["workflow"], row["status"]], row["n"])
    yield runs


def _steps():
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    buckets = {
        f"le_{index}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
        for index, bound in enumerate(STEP_SECONDS_BUCKETS)
    }
    totals = StepCheckpoint.objects.annotate(duration=duration).aggregate(
        count=Count("pk"), total=Sum("duration"), **buckets
    )
    histogram = HistogramMetricFamily(
        "baton_step_duration_seconds", "Time from a step's start to its checkpoint."
    )
    cumulative = [(str(bound), totals[f"le_{index}"]) for index, bound in enumerate(STEP_SECONDS_BUCKETS)]
    total = totals["total"].total_seconds() if totals["total"] else 0.0
    histogram.add_metric([], [*cumulative, ("+Inf", totals["count"])], total)
    yield histogram
    fallbacks = (
        StepCheckpoint.objects.filter(details__has_key="fallbacks").exclude(details__fallbacks=[]).count()
    )
    yield CounterMetricFamily("baton_model_fallbacks", "Steps answered by a fallback model.", value=fallbacks)


def _ledger_counters():
    actions = {
        "run.step.retrying": ("baton_step_retries", "Step attempts that failed and were scheduled again."),
        "run.dead_lettered": ("baton_dead_letters", "Runs moved to the dead-letter queue."),
    }
    counts = dict(
        AuditEvent.objects.filter(action__in=actions)
        .values("action")
        .annotate(n=Count("pk"))
        .values_list("action", "n")
    )
    for action, (name, documentation) in actions.items():
        yield CounterMetricFamily(name, documentation, value=counts.get(action, 0))


def _policy():
    decisions = CounterMetricFamily(
        "baton_policy_decisions",
        "Policy decisions by decision point and outcome.",
        labels=["point", "outcome"],
    )
    rows = PolicyDecision.objects.values("decision_point", "allow").annotate(n=Count("pk")).order_by()
    for row in rows:
        decisions.add_metric([row["decision_point"], "allow" if row["allow"] else "deny"], row["n"])
    yield decisions


def _approvals():
    pending = PendingAction.objects.filter(status=PendingAction.Status.PENDING).count()
    yield GaugeMetricFamily(
        "baton_approvals_pending", "Approval requests waiting for a reviewer.", value=pending
    )
    waited = PendingAction.objects.filter(decided_at__isnull=False).aggregate(
        count=Count("pk"),
        total=Sum(ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())),
    )
    wait = HistogramMetricFamily(
        "baton_approval_wait_seconds", "Time from an approval request to its decision."
    )
    total = waited["total"].total_seconds() if waited["total"] else 0.0
    wait.add_metric([], [("+Inf", waited["count"])], total)
    yield wait


def _circuits():
    circuit = GaugeMetricFamily(
        "baton_model_circuit_open", "1 while a model endpoint's circuit is open.", labels=["endpoint"]
    )
    for endpoint, state in sorted(shared_circuit_states().items()):
        circuit.add_metric([endpoint], 1.0 if state == "open" else 0.0)
    yield circuit
