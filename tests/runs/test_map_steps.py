"""The `map` step in process: fan-out, one checkpointed branch per element, fan-in exactly once.

Each branch is advanced here by `map_branch_advance`, as its Celery task would; the run by
`run_advance`. External systems are the loopback tool server (it counts real effects) and
the OpenAI-compatible model server; nothing of Baton's own is replaced.
"""

# ruff: noqa: F401, F811  (fixtures shared with the failure-mode tests are imported by name)

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.audit import verify_chain
from controlplane.identity import actor_for
from policy.models import PolicyDecision
from runs import services
from runs.engine import fanout
from runs.models import Effect, MapBranch, Run
from tests.support.workflows import advance, http_tool, workflow

from .test_failure_modes import (
    event,
    events,
    fast_retries,
    llm,
    posts,
    remote_model,
    states,
)

pytestmark = pytest.mark.django_db
ORDER = {"text": "Check the stock of my order", "lines": [{"sku": "A-1"}, {"sku": "B-2"}, {"sku": "C-3"}]}


def map_flow(server, *, concurrency=2, check_tool="stock.check", **limits) -> dict:
    """Check each order line (a write, so it has an effect and a compensation), then reduce."""
    return workflow(
        "stock_flow",
        {
            "name": "check",
            "map": {
                "over": "lines",
                "as": "line",
                "tool": check_tool,
                "agent": "ops_agent",
                "args": {"sku": "=line.sku", "case_id": "=case_id"},
                "concurrency": concurrency,
            },
        },
        {
            "name": "summarise",
            "tool": "stock.summary",
            "agent": "ops_agent",
            "args": {"checks": "=check"},
        },
        **limits,
    )


def map_tools(server) -> dict:
    return {
        "stock.release": http_tool(server, "stock.release"),
        "stock.check": http_tool(server, "stock.check", compensation_tool="stock.release"),
        "stock.summary": http_tool(server, "stock.summary"),
    }


@pytest.fixture
def stock_flow(publish, tool_server):
    publish(map_flow(tool_server), tools=map_tools(tool_server))
    return "stock_flow"


def branches(run: Run) -> list[MapBranch]:
    return list(MapBranch.objects.filter(run=run).order_by("index"))


def run_branch(branch: MapBranch, worker: str = "test") -> MapBranch:
    services.map_branch_advance(branch_id=branch.pk, worker=worker)
    return MapBranch.objects.get(pk=branch.pk)


def statuses(run: Run) -> list[str]:
    return [branch.status for branch in branches(run)]


def test_a_map_step_fans_out_within_its_concurrency_and_fans_in_the_ordered_outputs_once(
    stock_flow, submit, tool_server
):
    run = advance(submit(stock_flow, ORDER))

    # Fanned out: the run is given back (no lease) while two branches hold the two slots.
    assert run.status == Run.Status.RUNNING and run.current_state == "check"
    assert (run.lease_owner, run.lease_expires_at) == ("", None)
    assert statuses(run) == ["queued", "queued", "pending"]
    assert [b.item for b in branches(run)] == ORDER["lines"]
    assert event(run, "run.map.started").payload == {
        "state": "check",
        "sequence": 1,
        "branches": 3,
        "concurrency": 2,
    }
    assert tool_server.requests == [] and states(run) == []

    # Branch 1 first: the outputs are ordered by element, not by completion.
    second = run_branch(branches(run)[1])
    assert second.status == MapBranch.Status.SUCCEEDED and second.output["args"]["sku"] == "B-2"
    assert statuses(run) == ["queued", "succeeded", "queued"]  # the freed slot went to branch 2
    assert Run.objects.get(pk=run.pk).lease_expires_at is None  # not everything settled yet
    run_branch(branches(run)[2])
    run_branch(branches(run)[0])
    assert statuses(run) == ["succeeded"] * 3
    assert Run.objects.get(pk=run.pk).lease_expires_at is not None  # the fan-in is on its way

    run = advance(run)

    assert run.status == Run.Status.SUCCEEDED and states(run) == ["check", "summarise"]
    check = run.checkpoints.get(state="check")
    assert [output["args"]["sku"] for output in check.output["check"]] == ["A-1", "B-2", "C-3"]
    assert check.details == {"kind": "map", "branches": 3, "concurrency": 2}
    summary = [r.body["args"] for r in tool_server.requests if r.path == "/stock.summary"]
    assert [c["args"]["sku"] for c in summary[0]["checks"]] == ["A-1", "B-2", "C-3"]
    # Each branch has its own idempotency key and its own policy decisions.
    keys = [e.idempotency_key for e in Effect.objects.filter(tool="stock.check").order_by("state")]
    assert len(set(keys)) == 3 and tool_server.effects_per_operation["stock.check"] == 3
    assert sorted(Effect.objects.filter(tool="stock.check").values_list("state", flat=True)) == [
        "check[0]",
        "check[1]",
        "check[2]",
    ]
    assert PolicyDecision.objects.filter(run_id=str(run.pk), decision_point="tool.call").count() == 4
    limits = PolicyDecision.objects.filter(
        run_id=str(run.pk), decision_point="step.transition", input__from="check", input__to="check"
    )
    assert limits.count() == 3 and all(d.allow for d in limits)
    assert run.spent["tool_calls"] == 4 and run.hop_count == 2
    assert events(run).count("run.map.branch.completed") == 3
    assert verify_chain().ok


def test_duplicate_deliveries_of_branches_and_of_the_run_change_nothing(stock_flow, submit, tool_server):
    run = advance(submit(stock_flow, ORDER))
    first, _, third = branches(run)

    assert run_branch(third).status == MapBranch.Status.PENDING  # no slot yet: its message does nothing
    assert run_branch(first).status == MapBranch.Status.SUCCEEDED
    before = (events(run), PolicyDecision.objects.count(), tool_server.effects, len(tool_server.requests))
    assert run_branch(first, worker="w2").status == MapBranch.Status.SUCCEEDED  # delivered again
    assert (
        events(run),
        PolicyDecision.objects.count(),
        tool_server.effects,
        len(tool_server.requests),
    ) == before

    # The run delivered again while branches are out: no new branches, no checkpoint.
    run = advance(run, worker="w5")
    assert len(branches(run)) == 3 and states(run) == [] and run.lease_owner == ""

    for branch in branches(run)[1:]:
        run_branch(branch)
    run = advance(advance(run), worker="w6")  # the fan-in, then a duplicate of its message

    assert run.status == Run.Status.SUCCEEDED
    assert states(run) == ["check", "summarise"]
    completed = [e for e in events(run) if e == "run.step.completed"]
    assert len(completed) == 2 and events(run).count("run.map.started") == 1
    assert tool_server.effects_per_operation["stock.check"] == 3


def test_a_failed_branch_fails_the_map_and_compensates_every_branchs_effects_in_reverse_order(
    stock_flow, submit, tool_server
):
    run = advance(submit(stock_flow, ORDER))
    first, second, third = branches(run)
    assert run_branch(first).status == MapBranch.Status.SUCCEEDED
    tool_server.fail_next(1, 400)  # the next check is refused: no effect, no retry

    failed = run_branch(second)

    assert failed.status == MapBranch.Status.FAILED and "HTTP 400" in failed.error
    # Branch 2 had just taken the slot branch 0 freed: it still runs; nothing new starts.
    assert statuses(run) == ["succeeded", "failed", "queued"]
    assert Run.objects.get(pk=run.pk).lease_expires_at is None  # branch 2 has not settled
    run_branch(third)
    assert statuses(run) == ["succeeded", "failed", "succeeded"]

    run = advance(run)

    assert run.status == Run.Status.COMPENSATED
    assert run.error.startswith("map check: branch 1 failed: stock.check failed")
    assert states(run) == []
    released = [
        r.body["args"]["original_effect_id"] for r in tool_server.requests if r.path == "/stock.release"
    ]
    assert released == ["stock.check:2", "stock.check:1"]  # newest first, across branches
    assert dict(Effect.objects.values_list("state", "status")) == {
        "check[0]": Effect.Status.COMPENSATED,
        "check[1]": Effect.Status.REJECTED,
        "check[2]": Effect.Status.COMPENSATED,
    }
    assert event(run, "run.map.branch.failed").payload["index"] == 1
    assert posts(tool_server, "stock.summary") == []


def test_pending_branches_are_cancelled_once_a_branch_fails(publish, submit, tool_server):
    publish(map_flow(tool_server, concurrency=1), tools=map_tools(tool_server))
    run = advance(submit("stock_flow", ORDER))
    assert statuses(run) == ["queued", "pending", "pending"]
    tool_server.fail_next(1, 400)

    run_branch(branches(run)[0])

    assert statuses(run) == ["failed", "cancelled", "cancelled"]
    run = advance(run)
    assert run.status == Run.Status.FAILED and "branch 0 failed" in run.error
    assert tool_server.effects == 0


def test_a_branch_retries_on_its_own_and_a_branch_past_the_deadline_is_never_called(
    stock_flow, submit, tool_server
):
    run = advance(submit(stock_flow, ORDER))
    tool_server.fail_next(1, 503)

    retried = run_branch(branches(run)[0])

    assert (retried.status, retried.attempts) == (MapBranch.Status.QUEUED, 1)
    assert event(run, "run.map.branch.retrying").payload["attempt"] == 1
    assert run_branch(retried).status == MapBranch.Status.SUCCEEDED
    Run.objects.filter(pk=run.pk).update(deadline=timezone.now() - timedelta(seconds=1))

    late = run_branch(branches(run)[1])

    assert late.status == MapBranch.Status.FAILED and late.error == "branch 1 denied: deadline passed"
    assert [r.body["args"]["sku"] for r in tool_server.requests if r.path == "/stock.check"] == ["A-1", "A-1"]


def test_the_sweeper_sends_again_a_branch_whose_lease_expired(stock_flow, submit, tool_server):
    run = advance(submit(stock_flow, ORDER))
    MapBranch.objects.filter(run=run, index=0).update(
        status=MapBranch.Status.RUNNING,
        lease_owner="worker-9@gone:4242:0123456789ab",
        lease_expires_at=timezone.now() - timedelta(minutes=5),
    )

    assert services.runs_sweep_expired_leases() == 1

    swept = branches(run)[0]
    assert swept.lease_owner == "" and swept.lease_expires_at > timezone.now()
    assert event(run, "run.map.branch.lease_expired").payload == {
        "state": "check",
        "index": 0,
        "previous_owner": "worker-9@gone:4242:0123456789ab",
    }
    assert services.runs_sweep_expired_leases() == 0  # the waiting run itself holds no lease
    assert run_branch(swept).status == MapBranch.Status.SUCCEEDED


def test_a_branch_that_lost_its_lease_while_its_tool_call_was_out_records_the_effect_the_call_made(
    stock_flow, submit, tool_server, monkeypatch
):
    run = advance(submit(stock_flow, ORDER))
    first = branches(run)[0]
    real_call = fanout.execute_tool_step

    def call_then_lose_the_lease(*args, **kwargs):
        outcome = real_call(*args, **kwargs)
        # While the call was out, the sweeper gave the branch to another worker.
        MapBranch.objects.filter(pk=first.pk).update(lease_owner="someone-else")
        return outcome

    monkeypatch.setattr(fanout, "execute_tool_step", call_then_lose_the_lease)

    branch = run_branch(first)

    assert (branch.status, branch.lease_owner) == (MapBranch.Status.RUNNING, "someone-else")
    effect = Effect.objects.get(state="check[0]")
    assert (effect.status, effect.effect_id) == (Effect.Status.COMMITTED, "stock.check:1")
    assert effect.result["args"]["sku"] == "A-1"
    assert "run.map.branch.completed" not in events(run)


@pytest.mark.django_db(transaction=True)
def test_a_branch_slower_than_the_lease_keeps_it_while_its_call_is_out(
    publish, submit, tool_server, settings
):
    settings.RUN_LEASE_SECONDS = 2
    flow = map_flow(tool_server, concurrency=1)  # no other branch waits in the queue meanwhile
    flow["steps"][0]["map"]["timeout_s"] = 5
    publish(flow, tools=map_tools(tool_server))
    run = advance(submit("stock_flow", ORDER))
    tool_server.delay_next(3.5)  # the reply comes after the lease the fan-out gave has run out
    swept = []

    def sweep_while_the_call_is_out() -> None:
        try:
            deadline = time.monotonic() + 10
            while tool_server.effects == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(2.5)
            swept.append(services.runs_sweep_expired_leases())
        finally:
            connection.close()

    beat = threading.Thread(target=sweep_while_the_call_is_out)
    beat.start()
    branch = run_branch(branches(run)[0])
    beat.join(timeout=15)

    assert swept == [0] and "run.map.branch.lease_expired" not in events(run)
    assert branch.status == MapBranch.Status.SUCCEEDED


def test_a_map_over_something_that_is_not_a_list_fails_closed(stock_flow, submit, tool_server):
    run = advance(submit(stock_flow, {"text": "no lines", "lines": "A-1"}))

    assert run.status == Run.Status.FAILED
    assert run.error == "map check: 'lines' gave a str, not a list"
    assert not MapBranch.objects.exists() and tool_server.requests == []


def test_an_empty_list_goes_straight_to_the_reduce_step(stock_flow, submit, tool_server):
    run = advance(submit(stock_flow, {"text": "nothing to check", "lines": []}))

    assert run.status == Run.Status.SUCCEEDED and states(run) == ["check", "summarise"]
    assert posts(tool_server) == ["stock.summary"]


def test_agent_branches_each_ask_the_model_with_their_own_element(publish, submit, llm):
    publish(
        workflow(
            "label_flow",
            {
                "name": "label",
                "map": {"over": "lines", "as": "line", "agent": "intake_classifier", "concurrency": 3},
            },
            {"name": "triage", "agent": "response_writer"},
        ),
        bindings={
            "intake_classifier": {"prompt": "line", "model_config": "fake-llm"},
            "response_writer": {"prompt": "draft_reply", "model_config": "builtin-small"},
        },
        prompts={
            "line": {"template": "Label the line {{ line.sku }}", "variables_schema": {"type": "object"}}
        },
        model_configs={"fake-llm": remote_model(llm)},
    )
    llm.script('{"label": "first"}', '{"label": "second"}', '{"label": "third"}')
    run = advance(submit("label_flow", ORDER))

    for branch in branches(run):
        run_branch(branch)
    run = advance(run)

    assert run.status == Run.Status.SUCCEEDED
    assert [r.user_prompt for r in llm.requests] == [f"Label the line {s}" for s in ("A-1", "B-2", "C-3")]
    assert run.checkpoints.get(state="label").output == {
        "label": [{"label": "first"}, {"label": "second"}, {"label": "third"}]
    }
    keys = [r.headers["idempotency-key"] for r in llm.requests]
    assert len(set(keys)) == 3


def test_the_run_api_shows_the_branches(
    stock_flow, submit, requester, client_for, django_assert_max_num_queries
):
    run = advance(submit(stock_flow, ORDER))
    run_branch(branches(run)[0])
    client = client_for(requester)

    with CaptureQueriesContext(connection) as queries:
        body = client.get(f"/api/v1/runs/{run.pk}").json()

    assert [(b["index"], b["state"], b["status"]) for b in body["branches"]] == [
        (0, "check", "succeeded"),
        (1, "check", "queued"),
        (2, "check", "queued"),
    ]
    assert body["branches"][0]["item"] == {"sku": "A-1"}
    assert body["branches"][0]["output"]["args"]["sku"] == "A-1"
    many = len(queries)
    for branch in branches(run)[1:]:
        run_branch(branch)
    with django_assert_max_num_queries(many):  # no query per branch
        client.get(f"/api/v1/runs/{run.pk}")


def test_the_run_page_shows_each_branch_with_its_element_status_and_output(
    stock_flow, submit, requester, signed_in, tool_server
):
    run = advance(submit(stock_flow, ORDER))
    tool_server.fail_next(1, 400)
    run_branch(branches(run)[0])
    client = signed_in(requester)

    with CaptureQueriesContext(connection) as queries:
        html = client.get(f"/runs/{run.pk}/").content.decode()

    assert "Map branches" in html
    first, second, third = branches(run)
    assert f'id="branch-{first.pk}"' in html and f'id="branch-{third.pk}"' in html
    assert "stock.check failed" in html and "status-failed" in html
    assert "status-cancelled" in html  # branch 2 waited for a slot: it never starts now
    assert "&quot;sku&quot;: &quot;B-2&quot;" in html  # the element, escaped
    assert third.status == MapBranch.Status.CANCELLED
    run_branch(second)
    with CaptureQueriesContext(connection) as more:
        html = client.get(f"/runs/{run.pk}/").content.decode()
    assert html.count("status-succeeded") == 1 and len(more) == len(queries)  # no query per branch


def test_an_operator_retry_runs_again_only_the_branches_that_did_not_succeed(
    publish, submit, tool_server, requester
):
    flow = map_flow(tool_server, concurrency=1, check_tool="stock.lookup")
    publish(
        flow,
        tools={
            **map_tools(tool_server),
            "stock.lookup": http_tool(tool_server, "stock.lookup", side_effect="read"),
        },
    )
    run = advance(submit("stock_flow", ORDER))
    run_branch(branches(run)[0])
    tool_server.fail_next(1, 400)
    run_branch(branches(run)[1])
    run = advance(run)
    assert run.status == Run.Status.FAILED and statuses(run) == ["succeeded", "failed", "cancelled"]

    services.run_retry(run=run, actor=actor_for(requester), reason="lookup service fixed")
    run = advance(run)

    assert statuses(run) == ["succeeded", "queued", "pending"]
    assert event(run, "run.retried").payload["branches_reset"] == 2
    for index in (1, 2):
        run_branch(branches(run)[index])
    run = advance(run)
    assert run.status == Run.Status.SUCCEEDED
    looked_up = [r.body["args"]["sku"] for r in tool_server.requests if r.path == "/stock.lookup"]
    assert looked_up == ["A-1", "B-2", "B-2", "C-3"]  # A-1 was not asked again
