"""Tracing installed for one test and taken out again: in memory, or over OTLP to a loopback
receiver (the web side in this process, and a real worker exporting to the same receiver)."""

import pytest
from django.db import connection
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from controlplane import telemetry
from tests.support.worker import WorkerProcess

from .otlp_receiver import OtlpReceiver


def uninstall_tracing() -> None:
    """Back to a process in which nothing was ever installed: the API lets a provider be set
    once per process, so its globals are reset by hand, as OpenTelemetry's own tests do."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    telemetry._provider = None
    telemetry._tracer_of.cache_clear()


@pytest.fixture(autouse=True)
def untraced_process():
    uninstall_tracing()
    yield
    uninstall_tracing()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """Every span this process ends, kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()


@pytest.fixture
def otlp_receiver():
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def traced_web(settings, otlp_receiver):
    """This process configured as the web side is, exporting to the loopback receiver."""
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = otlp_receiver.url
    settings.OTEL_SERVICE_NAME = "baton-web"
    assert telemetry.configure_tracing()
    yield
    telemetry.flush_tracing()
    DjangoInstrumentor().uninstrument()
    CeleryInstrumentor().uninstrument()
    telemetry._provider.shutdown()


@pytest.fixture
def traced_worker(committed_db, isolated_celery_queue, tmp_path, otlp_receiver):
    """A real Celery worker process exporting its spans to the loopback receiver."""
    process = WorkerProcess(
        connection.settings_dict,
        queue=isolated_celery_queue,
        log_dir=tmp_path,
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
            "OTEL_SERVICE_NAME": "baton-worker",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms between exports: the test waits for them
        },
    )
    process.start()
    yield process
    process.stop()
