"""A run's spans follow the sampling decision of the trace it was submitted in: a sampler set to
keep a share of the traces (OTEL_TRACES_SAMPLER) keeps or drops a run's spans with its request's."""

import itertools

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from tests.support.workflows import advance

from .test_spans import SMALL_REFUND, submit_in_request

pytestmark = pytest.mark.django_db
# A ratio sampler keeps a trace whose id's low 64 bits fall under ratio * 2**64.
KEPT_AT_HALF, DROPPED_AT_HALF = 1, 2**64 - 1


class FixedTraceIds(IdGenerator):
    """Hands out the given trace ids in turn, so that a test knows which traces a ratio keeps."""

    def __init__(self, *trace_ids: int):
        self._trace_ids = itertools.cycle(trace_ids)
        self._span_ids = RandomIdGenerator()

    def generate_trace_id(self) -> int:
        return next(self._trace_ids)

    def generate_span_id(self) -> int:
        return self._span_ids.generate_span_id()


def sampled_at(ratio: float, id_generator: IdGenerator | None = None) -> InMemorySpanExporter:
    """Tracing installed as OTEL_TRACES_SAMPLER=parentbased_traceidratio with this ratio would."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)), id_generator=id_generator)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def exported_names(exporter: InMemorySpanExporter, trace_id: str) -> set[str]:
    return {s.name for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id}


def test_a_run_submitted_in_a_dropped_trace_exports_no_spans(demo_registry, requester):
    exporter = sampled_at(0.0)
    run, request = submit_in_request(requester, "support_case_resolution", SMALL_REFUND, channel="staging")
    assert not request.get_span_context().trace_flags.sampled
    advance(run)
    assert exported_names(exporter, run.trace_id) == set()


def test_a_run_keeps_its_spans_exactly_when_its_request_was_sampled(demo_registry, requester):
    exporter = sampled_at(0.5, FixedTraceIds(KEPT_AT_HALF, DROPPED_AT_HALF))
    kept, kept_request = submit_in_request(
        requester, "support_case_resolution", SMALL_REFUND, channel="staging"
    )
    dropped, _ = submit_in_request(requester, "support_case_resolution", SMALL_REFUND, channel="staging")
    advance(kept)
    advance(dropped)
    assert kept_request.get_span_context().trace_flags.sampled
    assert {"POST api/v1/tasks", "run", "step", "policy.decide"} <= exported_names(exporter, kept.trace_id)
    assert exported_names(exporter, dropped.trace_id) == set()
