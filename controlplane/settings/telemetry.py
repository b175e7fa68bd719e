"""OpenTelemetry: traces go out over OTLP only when an endpoint is configured."""

from .env import env, url

_endpoint = env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="")
OTEL_EXPORTER_OTLP_ENDPOINT = url("OTEL_EXPORTER_OTLP_ENDPOINT", _endpoint)
OTEL_SERVICE_NAME = env.str("OTEL_SERVICE_NAME", default="baton")
# The `tenant.id` of every span: which installation (customer, environment) a trace comes from.
TENANT_ID = env.str("BATON_TENANT_ID", default="default")
