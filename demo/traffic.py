"""Realistic demo traffic, submitted through the REST API with the Python client.

The mix: support cases (small refunds that wait only for the irreversible CRM write, large
refunds that stop at the approval gate first, customers asking for a person), data batches
(clean, anomalous, with a changed schema, one that does not exist so its ingest tool fails,
and two that meet the sandbox data catalog's outages: one refused once, so its run retries and
succeeds, one refused past the engine's attempts, so its run is dead-lettered), tasks on
restricted data that policy refuses, and malformed requests the API rejects.
"""

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from baton_client import BatonClient, BatonError


@dataclass(frozen=True)
class TrafficCase:
    kind: str
    workflow: str
    case_id: str
    input: dict
    sensitivity: str = "internal"


_SUPPORT = {
    "small_refund": ("CASE-1001", "Please refund order #{n}: a refund of $120"),
    "large_refund": ("CASE-1002", "I want my money back for order #{n}, a refund of $750"),
    "wants_person": ("CASE-1003", "I want to speak to a person about my order #{n}"),
}
_BATCHES = {
    "clean_batch": "2026-11-19",
    "anomalous_batch": "2026-11-20",
    "schema_change": "2026-11-21",
    "missing_batch": "2026-12-{day:02d}",
    "catalog_hiccup": "2026-11-22",
    "catalog_outage": "2026-11-23",
}
RETRIED = "succeeded after retry"
# One round of the mix, in order: what most traffic looks like, then the awkward cases.
MIX = (
    "small_refund",
    "clean_batch",
    "large_refund",
    "anomalous_batch",
    "wants_person",
    "schema_change",
    "small_refund",
    "restricted_data",
    "missing_batch",
    "malformed",
    "catalog_hiccup",
    "catalog_outage",
)


def traffic_cases() -> Iterator[TrafficCase]:
    for number, kind in enumerate(itertools.cycle(MIX), start=1):
        if kind in _SUPPORT:
            case_id, text = _SUPPORT[kind]
            yield TrafficCase(
                kind, "support_case_resolution", case_id, {"text": text.format(n=1000 + number)}
            )
        elif kind in _BATCHES:
            batch = _BATCHES[kind].format(day=number % 28 + 1)
            dataset_input = {"dataset": "orders_daily", "batch_id": batch}
            yield TrafficCase(kind, "data_pipeline_review", f"orders_daily/{batch}", dataset_input)
        elif kind == "restricted_data":
            yield TrafficCase(
                kind, "support_case_resolution", "CASE-1004", {"text": "Refund of $40"}, "restricted"
            )
        else:
            yield TrafficCase(kind, "support_case_resolution", "", {"text": ""})


@dataclass
class TrafficReport:
    submitted: int = 0
    # By final status, RETRIED (succeeded after the engine retried a step), "refused" or "malformed".
    outcomes: Counter = field(default_factory=Counter)
    by_kind: dict = field(default_factory=dict)

    def add(self, case: TrafficCase, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.by_kind.setdefault(case.kind, Counter())[outcome] += 1


def drive(
    client: BatonClient,
    *,
    rate: float,
    duration: float,
    wait: float,
    prefix: str,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> TrafficReport:
    """Submit `rate` tasks a second for `duration` seconds, then wait up to `wait` seconds for
    the runs to finish or pause, and report how each ended."""
    total = max(1, int(rate * duration))
    report, submitted = TrafficReport(), []
    started = time.monotonic()
    for number, case in enumerate(itertools.islice(traffic_cases(), total), start=1):
        time.sleep(max(0.0, started + (number - 1) / rate - time.monotonic()))
        try:
            accepted = client.submit_task(
                case.workflow,
                case_id=case.case_id,
                input=case.input,
                channel="staging",
                sensitivity=case.sensitivity,
                idempotency_key=f"{prefix}-{number}",
            )
            submitted.append((case, accepted.run_id))
        except BatonError as error:
            report.add(case, "malformed" if error.status in (400, 422) else "refused")
        report.submitted = number
        progress(number, total)
    deadline = time.monotonic() + wait
    for case, run_id in submitted:
        try:
            run = client.wait_for_run(run_id, timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            report.add(case, "still running")
            continue
        report.add(case, RETRIED if run.status == "succeeded" and _retried(client, run_id) else run.status)
    return report


def _retried(client: BatonClient, run_id: str) -> bool:
    return any(event["action"] == "run.step.retrying" for event in client.run_events(run_id))
