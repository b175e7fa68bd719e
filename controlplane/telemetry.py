"""OpenTelemetry: off unless an OTLP endpoint is configured, and then one connected trace per run.

Off, no tracer provider is installed and `span()` hands out the no-op span without touching
the context. On, Django and Celery are instrumented and our own spans go out over OTLP/HTTP.

A run keeps the trace it was submitted in: its submission stores the trace id and the id of
the span it was submitted under (`Run.trace_id`, `Run.trace_parent`), and every task that
advances the run opens its `run` span as a child of that stored span, whatever context the
task's message carried. So a run resumed by the sweeper, by an approval days later or by an
operator retry still lands in its own trace; the task's Celery span is linked instead.
"""

import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from django.conf import settings
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from runs.models import Run

_provider: "TracerProvider | None" = None
# Attributes that every span opened inside a `run` (and a `step`) span carries too.
_inherited: ContextVar[Mapping[str, Any]] = ContextVar(
    "baton_inherited_attributes", default=MappingProxyType({})
)


def configure_tracing() -> bool:
    """Install the OTLP exporter and the Django and Celery instrumentation, once per process.

    Both sides instrument Celery: the web process to put the trace context on the messages it
    publishes, the worker to continue it."""
    global _provider
    if _provider is not None or not settings.OTEL_EXPORTER_OTLP_ENDPOINT:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    endpoint = f"{settings.OTEL_EXPORTER_OTLP_ENDPOINT.rstrip('/')}/v1/traces"
    resource = Resource.create({"service.name": settings.OTEL_SERVICE_NAME, "tenant.id": settings.TENANT_ID})
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(_provider)
    DjangoInstrumentor().instrument()
    CeleryInstrumentor().instrument()
    return True


def flush_tracing() -> None:
    """Send the spans still buffered: a Celery child process exits without running atexit hooks."""
    if _provider is not None:
        _provider.force_flush()


def tracing_enabled() -> bool:
    return _tracer() is not None


def current_trace_context() -> tuple[str, str]:
    """(trace id, span id) of the active span in W3C hex; when nothing is tracing, a fresh trace
    id in the same format and no span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return secrets.token_hex(16), ""
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


@contextmanager
def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, inherited: Mapping[str, Any] | None = None
) -> Iterator[trace.Span]:
    """A child of the current span with `attributes`; `inherited` ones go on every span opened
    inside it too. An exception sets status ERROR and records the exception's type only: its
    message may quote personal data."""
    tracer = _tracer()
    if tracer is None:
        yield trace.INVALID_SPAN
        return
    token = _inherited.set({**_inherited.get(), **inherited}) if inherited else None
    try:
        with _started(tracer, name, {**_inherited.get(), **(attributes or {})}) as current:
            yield current
    finally:
        if token is not None:
            _inherited.reset(token)


@contextmanager
def run_span(run: "Run") -> Iterator[trace.Span]:
    """The `run` span of one task advancing `run`, in the run's own trace (see the module's
    docstring); the run's attributes go on every span opened inside it."""
    tracer = _tracer()
    if tracer is None:
        yield trace.INVALID_SPAN
        return
    delivered = trace.get_current_span().get_span_context()
    token = _inherited.set(run_attributes(run))
    try:
        with _started(
            tracer,
            "run",
            {**_inherited.get(), "run.status": run.status, "run.state": run.current_state},
            context=_run_parent(run),
            links=[Link(delivered)] if delivered.is_valid else None,
        ) as current:
            yield current
    finally:
        _inherited.reset(token)


def record_run_span(
    run: "Run", name: str, *, start: datetime, end: datetime, attributes: Mapping[str, Any]
) -> None:
    """A finished span of `run`'s trace whose times are known afterwards (a wait, from the rows)."""
    tracer = _tracer()
    if tracer is None:
        return
    recorded = tracer.start_span(
        name,
        context=_run_parent(run),
        attributes=_present({**run_attributes(run), **attributes}),
        start_time=_nanoseconds(start),
    )
    recorded.end(end_time=_nanoseconds(end))


def run_attributes(run: "Run") -> dict[str, Any]:
    return {
        "tenant.id": settings.TENANT_ID,
        "run.id": str(run.pk),
        "workflow": run.workflow,
        "release.id": run.release_id or None,
    }


def _tracer() -> trace.Tracer | None:
    """The tracer of the installed provider; None when none is (the proxy stands in for it)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return None
    return _tracer_of(provider)


@lru_cache(maxsize=2)
def _tracer_of(provider: trace.TracerProvider) -> trace.Tracer:
    return provider.get_tracer("baton")


@contextmanager
def _started(
    tracer: trace.Tracer, name: str, attributes: Mapping[str, Any], **options
) -> Iterator[trace.Span]:
    with tracer.start_as_current_span(
        name,
        attributes=_present(attributes),
        record_exception=False,  # an exception event would carry the message and the traceback
        set_status_on_exception=False,
        **options,
    ) as current:
        try:
            yield current
        except Exception as error:
            kind = type(error).__name__
            current.set_attributes({"error.type": kind, "outcome": "error"})
            current.set_status(Status(StatusCode.ERROR, kind))
            raise


def _run_parent(run: "Run") -> Context:
    """The span `run` was submitted under. A run submitted while nothing traced has no such
    span: its spans then hang under an id derived from the run's, the same in every process."""
    trace_id = int(run.trace_id, 16)
    parent = run.trace_parent or run.pk.hex[:16]
    context = SpanContext(
        trace_id=trace_id,
        span_id=int(parent, 16),
        is_remote=True,
        trace_flags=_sampled_flags(trace_id),
    )
    return trace.set_span_in_context(NonRecordingSpan(context))


def _sampled_flags(trace_id: int) -> TraceFlags:
    """Whether the run's trace is kept, asked again of the configured sampler (OTEL_TRACES_SAMPLER,
    every trace by default) as for a new trace. The submission's own decision is not stored, but
    the ratio samplers decide by the trace id alone: a run's spans are kept when the request
    that started its trace was, instead of always, under a parent that was never exported."""
    sampler = getattr(trace.get_tracer_provider(), "sampler", None)
    if sampler is None or sampler.should_sample(None, trace_id, "run").decision.is_sampled():
        return TraceFlags(TraceFlags.SAMPLED)
    return TraceFlags(TraceFlags.DEFAULT)


def _present(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if value is not None}


def _nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)
