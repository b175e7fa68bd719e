"""Small released workflows for tests: definitions, loopback HTTP tools, and stepping a run."""

from runs import services
from runs.models import Run

from .tool_server import ToolServer

TEAM = "customer-support-ai"
# Applied beside the demo bundle's agents when a test workflow grants tools.
TOOL_AGENT = {
    "slug": "ops_agent",
    "display_name": "Operations agent",
    "owner_team": TEAM,
    "purpose": "Writes to the loopback systems of the failure-mode tests.",
    "runbook_url": "https://runbooks.example.org/support/ops-agent",
    "slo": {"p95_latency_ms": 1000, "success_rate": 0.99},
    "data_classification": "confidential",
    "status": "active",
}
TEXT = {"text": "Please refund order #123, I was charged twice"}


def workflow(name: str, *steps: dict, **limits) -> dict:
    return {
        "workflow": name,
        "version": "1.0.0",
        "steps": list(steps),
        **({"limits": limits} if limits else {}),
    }


def http_tool(server: ToolServer, operation: str, *, side_effect: str = "write", **extra) -> dict:
    return {
        "description": f"{operation} on the loopback tool server.",
        "side_effect": side_effect,
        "args_schema": {"type": "object"},
        "result_schema": {"type": "object"},
        "transport": {"type": "http", "url": f"{server.url}/{operation}"},
        **extra,
    }


def advance(run: Run, worker: str = "test") -> Run:
    services.run_advance(run_id=str(run.pk), worker=worker)
    return Run.objects.get(pk=run.pk)
