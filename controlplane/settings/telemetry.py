"""OpenTelemetry: traces go out over OTLP only when an endpoint is configured."""

from .env import env

OTEL_EXPORTER_OTLP_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="")
OTEL_SERVICE_NAME = env.str("OTEL_SERVICE_NAME", default="baton")
