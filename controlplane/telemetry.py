"""OpenTelemetry set-up: off (no exporter, no cost) unless an OTLP endpoint is configured."""

import secrets

from django.conf import settings
from opentelemetry import trace

tracer = trace.get_tracer("baton")
_configured = False


def configure_tracing(*, instrument_celery: bool = False) -> bool:
    """Install the OTLP exporter and the Django (and Celery) instrumentation once per process."""
    global _configured
    if _configured or not settings.OTEL_EXPORTER_OTLP_ENDPOINT:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.OTEL_SERVICE_NAME}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()
    if instrument_celery:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument()
    _configured = True
    return True


def current_trace_id() -> str:
    """The active W3C trace id, or a fresh one in the same format when nothing is tracing."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else secrets.token_hex(16)
