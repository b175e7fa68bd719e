"""Spans of runs executed in this process, kept in memory: one trace per run, the right parents
and attributes, errors by type only, and nothing at all when tracing is off."""

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from approvals.services import approval_decide
from controlplane.identity import actor_for
from controlplane.telemetry import configure_tracing, run_span, span
from runs import tools
from runs.models import MapBranch, PendingAction, Run, StepCheckpoint
from runs.services import map_branch_advance, task_submit
from tests.support.workflows import advance, http_tool, workflow

pytestmark = pytest.mark.django_db
SMALL_REFUND = {"text": "Please refund order #123, I want my money back: a refund of $120"}
RUN_ATTRIBUTES = {"tenant.id", "run.id", "workflow", "release.id"}


def hex_id(span_id: int) -> str:
    return format(span_id, "016x")


def submit_in_request(requester, workflow: str, task_input: dict, **extra) -> tuple[Run, trace.Span]:
    """Submit as the API does, inside a request's span (the Django instrumentation's, in production)."""
    with trace.get_tracer("tests").start_as_current_span("POST api/v1/tasks") as request:
        run = task_submit(
            requester=requester,
            actor=actor_for(requester),
            workflow=workflow,
            case_id="CASE-1001",
            input=task_input,
            **extra,
        ).run
    return run, request


def test_a_run_is_one_trace_of_run_step_policy_model_tool_and_approval_spans(
    demo_registry, requester, reviewer, spans, django_capture_on_commit_callbacks
):
    run, request = submit_in_request(requester, "support_case_resolution", SMALL_REFUND, channel="staging")
    assert advance(run).status == Run.Status.WAITING_APPROVAL
    pending = PendingAction.objects.get(run=run)
    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(pending_action_id=pending.pk, decision="approve", reason="ok", user=reviewer)
    assert advance(run).status == Run.Status.SUCCEEDED

    everything = spans.get_finished_spans()
    finished = [s for s in everything if format(s.context.trace_id, "032x") == run.trace_id]
    # The reviewer's decision belongs to the reviewer's request, not to the run.
    assert [(s.name, s.attributes["policy.decision_point"]) for s in everything if s not in finished] == [
        ("policy.decide", "approval.decide")
    ]
    by_id = {hex_id(s.context.span_id): s for s in finished}
    assert run.trace_parent == hex_id(request.get_span_context().span_id)
    parent = {name: hex_id(s.parent.span_id) if s.parent else "" for name, s in by_id.items()}
    assert [name for name, parent_id in parent.items() if parent_id not in by_id] == [run.trace_parent]

    def named(name: str) -> list:
        return [s for s in finished if s.name == name]

    runs = named("run")
    assert len(runs) == 2  # parked, then resumed by the approval: both in the run's own trace
    expected = {
        "tenant.id": "default",
        "run.id": str(run.pk),
        "workflow": "support_case_resolution",
        "release.id": run.release_id,
    }
    for run_span_ in runs:
        assert hex_id(run_span_.parent.span_id) == run.trace_parent
        assert {k: run_span_.attributes[k] for k in RUN_ATTRIBUTES} == expected

    steps = sorted(named("step"), key=lambda s: s.start_time)
    run_ids = {hex_id(s.context.span_id) for s in runs}
    assert all(hex_id(s.parent.span_id) in run_ids for s in steps)
    checkpoints = list(
        StepCheckpoint.objects.filter(run=run).order_by("sequence").values_list("state", flat=True)
    )
    # The step that asked for the approval ran again once it was given.
    assert [s.attributes["step"] for s in steps] == [*checkpoints[:-1], checkpoints[-1], checkpoints[-1]]
    step_ids = {hex_id(s.context.span_id) for s in steps}

    children = [s for s in finished if s.name in ("policy.decide", "model.call", "tool.call")]
    for child in children:
        if child.attributes.get("policy.decision_point") == "run.start":
            assert hex_id(child.parent.span_id) == run.trace_parent  # decided before the run existed
            continue
        assert hex_id(child.parent.span_id) in step_ids, child.name
        assert {k: child.attributes[k] for k in RUN_ATTRIBUTES} == expected
        assert child.attributes["step"] == by_id[hex_id(child.parent.span_id)].attributes["step"]

    decisions = named("policy.decide")
    assert {"run.start", "step.transition"} <= {d.attributes["policy.decision_point"] for d in decisions}
    for decision in decisions:
        assert decision.attributes["policy.bundle_digest"]
        assert decision.attributes["policy.engine"]
        assert isinstance(decision.attributes["policy.allow"], bool)

    models = named("model.call")
    assert models and all(m.attributes["model.provider"] == "builtin" for m in models)
    assert all(m.attributes["model.config"] == "builtin-small" for m in models)
    assert all(m.attributes["model.name"] == "rules-v1" and m.attributes["outcome"] == "ok" for m in models)
    assert all(m.attributes["model.prompt_tokens"] > 0 for m in models)

    calls = named("tool.call")
    assert [(c.attributes["tool.name"], c.attributes["tool.side_effect"]) for c in calls] == [
        ("kb_search", "read"),
        ("crm.update_case", "irreversible"),
    ]
    for call in calls:
        # Arguments and results may hold personal data: only what identifies the call goes out.
        assert set(call.attributes) == RUN_ATTRIBUTES | {
            "step",
            "tool.name",
            "tool.operation",
            "tool.side_effect",
            "tool.transport",
            "tool.replayed",
            "outcome",
        }
        assert call.attributes["outcome"] == "ok" and call.attributes["tool.replayed"] is False

    (wait,) = named("approval.wait")
    pending.refresh_from_db()
    assert hex_id(wait.parent.span_id) == run.trace_parent
    assert (wait.start_time, wait.end_time) == (
        int(pending.created_at.timestamp() * 1e9),
        int(pending.decided_at.timestamp() * 1e9),
    )
    assert wait.attributes["approval.pending_action_id"] == pending.pk
    assert wait.attributes["approval.outcome"] == "approved"
    assert wait.attributes["approval.approver_group"] == pending.approver_group
    assert wait.attributes["step"] == pending.state
    assert {k: wait.attributes[k] for k in RUN_ATTRIBUTES} == expected


def test_a_run_advanced_from_another_trace_stays_in_its_own_and_links_to_it(requester, spans):
    run, _request = submit_in_request(requester, "builtin.intake", {"text": "the app shows an error"})

    with trace.get_tracer("tests").start_as_current_span("run/advance_run") as delivery:
        assert advance(run).status == Run.Status.SUCCEEDED

    (run_span_,) = [s for s in spans.get_finished_spans() if s.name == "run"]
    assert format(run_span_.context.trace_id, "032x") == run.trace_id
    assert hex_id(run_span_.parent.span_id) == run.trace_parent
    assert [link.context.span_id for link in run_span_.links] == [delivery.get_span_context().span_id]
    assert "release.id" not in run_span_.attributes  # a built-in workflow has no release
    steps = [s for s in spans.get_finished_spans() if s.name == "step"]
    assert [s.attributes["step"] for s in steps] == ["classify", "acknowledge"]
    assert all(s.parent.span_id == run_span_.context.span_id for s in steps)


def test_map_branches_run_as_tasks_of_their_own_stay_in_the_runs_trace(
    publish, tool_server, requester, spans
):
    map_step = {
        "name": "check",
        "map": {
            "over": "lines",
            "as": "line",
            "tool": "stock.check",
            "agent": "ops_agent",
            "args": {"sku": "=line.sku"},
        },
    }
    summarise = {
        "name": "summarise",
        "tool": "stock.summary",
        "agent": "ops_agent",
        "args": {"checks": "=check"},
    }
    tools_ = {name: http_tool(tool_server, name) for name in ("stock.check", "stock.summary")}
    publish(workflow("stock_flow", map_step, summarise), tools=tools_)
    spans.clear()  # publishing asks policy too
    lines = [{"sku": "A-1"}, {"sku": "B-2"}]
    run, _request = submit_in_request(
        requester, "stock_flow", {"text": "Check my order", "lines": lines}, channel="staging"
    )

    advance(run)  # fans out
    for branch in MapBranch.objects.filter(run=run).order_by("index"):
        map_branch_advance(branch_id=branch.pk, worker="test")
    assert advance(run).status == Run.Status.SUCCEEDED  # fans in

    finished = spans.get_finished_spans()
    assert {format(s.context.trace_id, "032x") for s in finished} == {run.trace_id}
    runs = [s for s in finished if s.name == "run"]
    assert len(runs) == 4 and all(hex_id(r.parent.span_id) == run.trace_parent for r in runs)
    branch_steps = {
        s.attributes["step"]: s for s in finished if s.name == "step" and "[" in s.attributes["step"]
    }
    assert sorted(branch_steps) == ["check[0]", "check[1]"]
    calls = [s for s in finished if s.name == "tool.call" and s.attributes["tool.name"] == "stock.check"]
    assert sorted(c.attributes["step"] for c in calls) == ["check[0]", "check[1]"]
    assert all(c.parent.span_id == branch_steps[c.attributes["step"]].context.span_id for c in calls)


def test_an_error_marks_the_span_with_its_type_and_nothing_of_its_message(spans):
    call = tools.ToolCall(
        tool="crm.update_case",
        spec={
            "side_effect": "write",
            "args_schema": {"type": "object", "additionalProperties": False},
            "result_schema": {"type": "object"},
            "transport": {"type": "sandbox", "operation": "update_case"},
        },
        args={"email": "jane.doe@example.org"},
        idempotency_key="key-1",
    )
    with pytest.raises(tools.ToolRejected):
        tools.invoke(call)

    (failed,) = spans.get_finished_spans()
    assert (failed.name, failed.status.status_code) == ("tool.call", StatusCode.ERROR)
    assert failed.status.description == "ToolRejected"
    assert failed.attributes["error.type"] == "ToolRejected" and failed.attributes["outcome"] == "error"
    assert not failed.events  # an exception event would carry the message, which quotes the arguments
    assert "jane.doe" not in repr(dict(failed.attributes))


def test_without_an_endpoint_nothing_is_installed_and_spans_are_the_no_op(settings, requester):
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = ""

    assert configure_tracing() is False
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    run = task_submit(
        requester=requester,
        actor=actor_for(requester),
        workflow="builtin.intake",
        case_id="CASE-1",
        input={"text": "hello"},
    ).run
    assert len(run.trace_id) == 32 and run.trace_parent == ""
    with run_span(run) as outer, span("step", inherited={"step": "x"}) as inner:
        assert outer is inner is trace.INVALID_SPAN
        assert trace.get_current_span() is trace.INVALID_SPAN  # the context was not even touched
    assert advance(run).status == Run.Status.SUCCEEDED
