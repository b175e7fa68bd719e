"""Tool calls: schema checks, exactly-once effects, reconcile and compensation, on both transports.

The sandbox tools are the demo bundle's own specs, so the bundle is tested as shipped.
"""

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from urllib.parse import quote

import pytest
import yaml
from django.conf import settings
from django.db import connection, connections

from registry.artifact_kinds import content_problems
from runs import tools
from runs.tools import ToolCall, ToolOutcomeUnknown, ToolRejected, ToolResult, ToolUnavailable
from sandbox.models import Effect, Refund, SupportCase
from sandbox.seed import CASES

pytestmark = pytest.mark.django_db

BUNDLE = settings.BASE_DIR / "demo" / "bundles" / "support_case_resolution.yaml"
TOOLS: dict[str, dict] = yaml.safe_load(BUNDLE.read_text())["artifacts"]["tool"]
KEY = "run-1:commit"


def call(tool: str, args: dict, key: str = KEY, spec: dict | None = None) -> ToolCall:
    return ToolCall(tool=tool, spec=spec or TOOLS[tool], args=args, idempotency_key=key)


def update(key: str = KEY, refund: float = 120) -> ToolCall:
    args = {"case_id": "CASE-T1", "resolution": "Refunded in full.", "refund_amount": refund}
    return call("crm.update_case", args, key)


@pytest.fixture
def case() -> SupportCase:
    return SupportCase.objects.create(case_id="CASE-T1", customer="Ada Park", subject="Refund for order #9")


def test_the_demo_tools_are_valid_tool_artifacts():
    problems = {name: content_problems("tool", spec) for name, spec in TOOLS.items()}
    assert {name: found for name, found in problems.items() if found} == {}


def test_the_seeded_cases_exist_and_kb_search_finds_the_refund_articles():
    assert SupportCase.objects.filter(case_id__in=[case_id for case_id, _, _ in CASES]).count() == 5

    found = tools.invoke(
        call("kb_search", {"query": "I want my money back for order #123", "max_results": 3})
    )

    assert found.effect_id == "" and not found.replayed
    slugs = [hit["slug"] for hit in found.result["hits"]]
    assert len(slugs) == 3 and slugs[0] == "refund-policy"


def test_arguments_outside_the_schema_are_rejected_before_any_effect(case):
    with pytest.raises(
        ToolRejected, match=r"arguments outside args_schema: \$: 'resolution' is a required"
    ) as e:
        tools.invoke(call("crm.update_case", {"case_id": "CASE-T1", "refund_amount": 10}))

    assert not e.value.retryable
    assert not Effect.objects.exists() and not Refund.objects.exists()
    case.refresh_from_db()
    assert case.status == SupportCase.Status.OPEN


def test_a_result_outside_the_schema_is_rejected_and_names_the_effect_that_happened(case):
    spec = TOOLS["crm.update_case"] | {"result_schema": {"type": "object", "required": ["ticket"]}}

    with pytest.raises(ToolRejected, match="result outside result_schema") as e:
        tools.invoke(call("crm.update_case", update().args, spec=spec))

    assert e.value.effect_id == Effect.objects.get().effect_id


def test_a_refusal_of_the_system_is_rejected_without_an_effect():
    with pytest.raises(ToolRejected, match="no case 'CASE-404'"):
        tools.invoke(call("crm.update_case", {"case_id": "CASE-404", "resolution": "Done."}))

    assert not Effect.objects.exists()


def test_the_same_key_twice_makes_one_effect(case):
    first = tools.invoke(update())
    second = tools.invoke(update())

    assert not first.replayed and second.replayed
    assert second == ToolResult(first.result, first.effect_id, replayed=True)
    assert first.effect_id == f"case-update:{Effect.objects.get().pk}"
    assert first.result["status"] == "resolved" and first.result["refund_issued"] == "120.00"
    assert Refund.objects.count() == 1
    case.refresh_from_db()
    assert case.refund_total == Decimal("120.00")


def test_a_different_key_makes_a_second_effect(case):
    first = tools.invoke(update(key="run-1:commit"))
    second = tools.invoke(update(key="run-2:commit"))

    assert not second.replayed and second.effect_id != first.effect_id
    assert Effect.objects.count() == 2 and Refund.objects.count() == 2
    case.refresh_from_db()
    assert case.refund_total == Decimal("240.00")


def test_a_key_reused_for_another_call_is_rejected(case):
    tools.invoke(update(refund=120))

    with pytest.raises(ToolRejected, match="already used for another call"):
        tools.invoke(update(refund=900))

    assert Refund.objects.get().amount == Decimal("120.00")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent transactions need PostgreSQL")
@pytest.mark.usefixtures("committed_db")
def test_concurrent_duplicates_of_one_key_make_one_effect(case):
    callers = 8
    start = threading.Barrier(callers)

    def call_once(_: int) -> ToolResult:
        try:
            start.wait()
            return tools.invoke(update())
        finally:
            connections.close_all()

    with ThreadPoolExecutor(callers) as pool:
        results = list(pool.map(call_once, range(callers)))

    assert sorted(result.replayed for result in results) == [False] + [True] * (callers - 1)
    assert {result.effect_id for result in results} == {results[0].effect_id}
    assert Effect.objects.count() == 1 and Refund.objects.count() == 1
    case.refresh_from_db()
    assert case.refund_total == Decimal("120.00")


def test_reconcile_finds_a_committed_effect_and_nothing_for_an_unknown_key(case):
    done = tools.invoke(update())

    found = tools.reconcile(update(), TOOLS["crm.get_case"])

    assert found == ToolResult(done.result, done.effect_id, replayed=True)
    assert tools.reconcile(update(key="run-9:commit"), TOOLS["crm.get_case"]) is None


def test_compensation_reopens_the_case_and_reverses_the_refund_once(case):
    original_call = update()
    original = tools.invoke(original_call)

    undone = tools.compensate(original_call, TOOLS["crm.reopen_case"], original)
    again = tools.compensate(original_call, TOOLS["crm.reopen_case"], original)

    assert undone.result["refunds_reversed"] == ["120.00"] and not undone.replayed
    assert again == ToolResult(undone.result, undone.effect_id, replayed=True)
    now = tools.invoke(call("crm.get_case", {"case_id": "CASE-T1"})).result
    assert now["status"] == "reopened" and now["refund_total"] == "0.00"
    assert now["refunds"] == [{"amount": "120.00", "status": "reversed"}]
    assert Effect.objects.get(effect_id=original.effect_id).compensated_by_key == f"{KEY}:compensate"
    assert Effect.objects.count() == 2


# The http transport, against a loopback server with its own idempotency table.

HTTP_ARGS = {"case_id": "CASE-7", "resolution": "Refunded."}


def http_call(url: str, key: str = KEY, args: dict = HTTP_ARGS, timeout_s: float = 5.0) -> ToolCall:
    spec = {
        "side_effect": "irreversible",
        "args_schema": {
            "type": "object",
            "required": ["case_id"],
            "properties": {"case_id": {"type": "string"}},
        },
        "result_schema": {"type": "object", "required": ["operation"]},
        "transport": {"type": "http", "url": url},
    }
    assert content_problems("tool", spec) == []
    return ToolCall(tool="crm.update_case", spec=spec, args=args, idempotency_key=key, timeout_s=timeout_s)


def test_http_sends_the_key_and_returns_the_result(tool_server):
    done = tools.invoke(http_call(f"{tool_server.url}/update_case"))

    assert done == ToolResult(
        {"operation": "update_case", "args": HTTP_ARGS, "sequence": 1}, "update_case:1", replayed=False
    )
    [request] = tool_server.requests
    assert request.method == "POST" and request.path == "/update_case"
    assert request.headers["Idempotency-Key"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == {"args": HTTP_ARGS}


def test_http_replay_header_means_no_new_effect(tool_server):
    first = tools.invoke(http_call(f"{tool_server.url}/update_case"))
    second = tools.invoke(http_call(f"{tool_server.url}/update_case"))

    assert second == ToolResult(first.result, first.effect_id, replayed=True)
    assert tool_server.effects == 1


def test_http_arguments_outside_the_schema_are_never_sent(tool_server):
    with pytest.raises(ToolRejected):
        tools.invoke(http_call(f"{tool_server.url}/update_case", args={"case_id": 7}))

    assert tool_server.requests == []


@pytest.mark.parametrize("status", [400, 404, 422])
def test_http_4xx_is_rejected(tool_server, status):
    tool_server.fail_next(1, status)

    with pytest.raises(ToolRejected, match=f"HTTP {status}") as e:
        tools.invoke(http_call(f"{tool_server.url}/update_case"))

    assert not e.value.retryable and tool_server.effects == 0


@pytest.mark.parametrize(
    ("status", "retry_after", "error"),
    [
        (503, 2, ToolUnavailable),
        (502, 2, ToolUnavailable),
        (429, None, ToolUnavailable),
        (500, None, ToolOutcomeUnknown),
        (503, None, ToolOutcomeUnknown),
    ],
)
def test_http_server_errors(tool_server, status, retry_after, error):
    tool_server.fail_next(1, status, retry_after=retry_after)

    with pytest.raises(error) as e:
        tools.invoke(http_call(f"{tool_server.url}/update_case"))

    assert e.value.retryable


def test_http_reply_past_the_timeout_is_unknown_and_reconcile_finds_the_effect(tool_server):
    tool_server.delay_next(5)
    slow = http_call(f"{tool_server.url}/update_case", timeout_s=0.3)

    with pytest.raises(ToolOutcomeUnknown):
        tools.invoke(slow)

    found = tools.reconcile(slow, None)
    assert found is not None and found.effect_id == "update_case:1" and found.replayed
    assert tool_server.requests[-1].path == f"/update_case/effects/{quote(KEY, safe='')}"
    assert tools.invoke(http_call(f"{tool_server.url}/update_case")).replayed
    assert tool_server.effects == 1


def test_http_dropped_connection_is_unknown_and_reconcile_asks_the_lookup_tool(tool_server):
    tool_server.drop_connection_next()
    dropped = http_call(f"{tool_server.url}/update_case")
    lookup = {"transport": {"type": "http", "url": f"{tool_server.url}/get_case/"}}

    with pytest.raises(ToolOutcomeUnknown, match="lost after sending"):
        tools.invoke(dropped)

    assert tools.reconcile(dropped, lookup).effect_id == "update_case:1"
    assert tool_server.requests[-1].path == f"/get_case/effects/{quote(KEY, safe='')}"
    assert tool_server.effects == 1


def test_http_reconcile_of_an_unknown_key_is_none(tool_server):
    assert tools.reconcile(http_call(f"{tool_server.url}/update_case", key="never-sent"), None) is None


def test_http_connection_refused_is_unavailable():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/update_case"

    with pytest.raises(ToolUnavailable, match="could not connect") as e:
        tools.invoke(http_call(url))
    assert e.value.retryable

    with pytest.raises(ToolUnavailable, match="could not look up"):
        tools.reconcile(http_call(url), None)
