"""How released runs fail, in process: each failure mode of the run engine on a small workflow.

Every workflow here is release-as-code built on the demo bundle (its team, agents, prompts and
policy), applied by a platform engineer and promoted to staging. External systems are the
loopback servers: a tool server that counts effects and injects faults, and an OpenAI-compatible
model server with scripted replies. Nothing of Baton's own is replaced.
"""

import socket
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from controlplane.canonical import digest
from controlplane.errors import Conflict, InvalidInput
from controlplane.identity import actor_for
from controlplane.models import AuditEvent
from policy.models import PolicyDecision
from runs import services
from runs.engine.core import execute_released_step
from runs.engine.envelope import resolve
from runs.engine.released import released_workflow
from runs.engine.steps import execute_tool_step
from runs.models import Effect, Payload, PendingAction, Run
from runs.services.queue import enqueue
from tests.support.llm_server import FakeLLM
from tests.support.tool_server import ToolServer
from tests.support.workflows import TEXT, advance, http_tool, workflow

pytestmark = pytest.mark.django_db

SUMMARY_PROMPT = {
    "template": "Summarise this customer message for the case log: {{ text }}",
    "variables_schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
}
VALID = '{"intent": "refund", "summary": "double charge on order #123"}'
GARBAGE = "Sure! Here is what I think about this case, in prose only."


@pytest.fixture(autouse=True)
def fast_retries(settings):
    settings.RUN_RETRY_BACKOFF_SECONDS = 0


@pytest.fixture
def llm():
    with FakeLLM(api_key=None) as server:
        yield server


def remote_model(server: FakeLLM, **overrides) -> dict:
    return {
        "provider": "openai_compatible",
        "model": "test-model",
        "base_url": server.url,
        "parameters": {"temperature": 0},
        "price_per_1k_tokens": {"input": 0.0, "output": 0.0},
        "timeout_s": 5,
    } | overrides


def states(run: Run) -> list[str]:
    return list(run.checkpoints.order_by("sequence").values_list("state", flat=True))


def events(run: Run) -> list[str]:
    return list(
        AuditEvent.objects.filter(run_id=str(run.pk)).order_by("seq").values_list("action", flat=True)
    )


def event(run: Run, action: str) -> AuditEvent:
    return AuditEvent.objects.get(run_id=str(run.pk), action=action)


def posts(server: ToolServer, *operations: str) -> list[str]:
    """The operations POSTed to the tool server, in the order it received them."""
    paths = [request.path.strip("/") for request in server.requests if request.method == "POST"]
    return [path for path in paths if not operations or path in operations]


# 1. A tool call that times out after its effect was committed -----------------------------------


def test_a_timed_out_write_is_reconciled_on_retry_and_happens_once(publish, submit, tool_server):
    publish(
        workflow(
            "ticket_flow",
            {
                "name": "open_ticket",
                "tool": "tickets.create",
                "agent": "ops_agent",
                "timeout_s": 0.3,
                "reconcile_before_retry": True,
                "args": {"case_id": "=case_id", "subject": "=text"},
            },
        ),
        tools={"tickets.create": http_tool(tool_server, "tickets.create")},
    )
    tool_server.delay_next(3)  # the effect is applied, the reply comes after the client gave up
    run = advance(submit("ticket_flow"))

    assert run.status == Run.Status.RUNNING and run.step_attempts == 1 and run.lease_owner == ""
    effect = Effect.objects.get()
    assert effect.status == Effect.Status.UNKNOWN
    retrying = event(run, "run.step.retrying").payload
    assert retrying["attempt"] == 1 and "outcome unknown" in retrying["error"]
    assert tool_server.effects == 1

    run = advance(run)  # the retry the engine scheduled

    assert run.status == Run.Status.SUCCEEDED
    assert tool_server.effects == 1  # reconciled, not repeated
    assert posts(tool_server) == ["tickets.create"]
    assert [r.method for r in tool_server.requests] == ["POST", "GET"]
    effect.refresh_from_db()
    assert effect.status == Effect.Status.COMMITTED
    assert effect.effect_id == "tickets.create:1"
    assert effect.result["args"] == {"case_id": "CASE-42", "subject": TEXT["text"]}
    checkpoint = run.checkpoints.get()
    assert checkpoint.details["reconciled"] is True and checkpoint.details["effect_id"] == "tickets.create:1"
    assert event(run, "run.step.completed").payload["reconciled"] is True
    assert run.step_attempts == 0


def test_an_unknown_outcome_is_reconciled_even_when_the_step_does_not_ask_for_it(
    publish, submit, tool_server
):
    publish(
        workflow(
            "ticket_flow",
            {"name": "open_ticket", "tool": "tickets.create", "agent": "ops_agent", "timeout_s": 0.3},
        ),
        tools={"tickets.create": http_tool(tool_server, "tickets.create")},
    )
    tool_server.delay_next(3)
    run = advance(advance(submit("ticket_flow")))

    assert run.status == Run.Status.SUCCEEDED
    assert tool_server.effects == 1 and [r.method for r in tool_server.requests] == ["POST", "GET"]
    effect = Effect.objects.get()
    assert (effect.status, effect.effect_id) == (Effect.Status.COMMITTED, "tickets.create:1")
    assert run.checkpoints.get().details["reconciled"] is True


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/tickets"


def test_a_lookup_that_cannot_answer_is_retried_and_the_write_is_never_repeated(publish, submit, tool_server):
    lookup = http_tool(tool_server, "tickets.lookup", side_effect="read")
    lookup["transport"]["url"] = closed_port_url()  # the lookup service is down
    publish(
        workflow(
            "lookup_flow",
            {"name": "open_ticket", "tool": "tickets.create", "agent": "ops_agent", "timeout_s": 0.3},
        ),
        tools={
            "tickets.lookup": lookup,
            "tickets.create": http_tool(tool_server, "tickets.create", reconcile_lookup="tickets.lookup"),
        },
    )
    tool_server.delay_next(3)
    run = submit("lookup_flow")

    for _ in range(settings.RUN_STEP_MAX_ATTEMPTS):
        run = advance(run)

    assert run.status == Run.Status.DEAD_LETTERED
    assert "could not be reconciled" in run.error and "could not look up" in run.error
    assert posts(tool_server) == ["tickets.create"] and tool_server.effects == 1
    assert Effect.objects.get().status == Effect.Status.UNKNOWN  # for the operator to settle


# 2. Malformed model output ----------------------------------------------------------------------


@pytest.fixture
def summary_flow(publish, llm):
    publish(
        workflow("summary_flow", {"name": "summarise", "agent": "intake_classifier"}),
        bindings={"intake_classifier": {"prompt": "summary", "model_config": "fake-llm"}},
        prompts={"summary": SUMMARY_PROMPT},
        model_configs={"fake-llm": remote_model(llm)},
    )
    return "summary_flow"


def test_malformed_output_that_the_repair_cannot_fix_is_dead_lettered_after_max_attempts(
    summary_flow, submit, llm
):
    attempts = settings.RUN_STEP_MAX_ATTEMPTS
    llm.script(*[GARBAGE] * (2 * attempts))  # every attempt: the answer and its repair
    run = submit(summary_flow)

    for attempt in range(1, attempts):
        run = advance(run)
        assert (run.status, run.step_attempts) == (Run.Status.RUNNING, attempt)
    run = advance(run)

    assert run.status == Run.Status.DEAD_LETTERED and run.finished_at is not None
    assert "malformed model output after repair" in run.error
    assert run.lease_owner == "" and not run.checkpoints.exists()
    assert len(llm.requests) == 2 * attempts
    repairs = [r for r in llm.requests if "Your previous reply could not be used" in r.user_prompt]
    assert len(repairs) == attempts
    assert events(run).count("run.step.retrying") == attempts - 1
    dead = event(run, "run.dead_lettered").payload
    assert dead["attempts"] == attempts and dead["state"] == "summarise"
    assert dead["error"] == run.error
    envelope = resolve(dead["envelope"])  # inline, or by reference when large
    assert envelope["run_id"] == str(run.pk) and envelope["state"] == "summarise"
    assert envelope["original_input"] == TEXT
    # Each attempt asked afresh: a provider caching by key must not replay an earlier answer.
    keys = [r.headers["idempotency-key"] for r in llm.requests]
    assert len(set(keys)) == len(keys)


def test_malformed_output_repaired_on_the_same_attempt_lets_the_step_succeed(summary_flow, submit, llm):
    llm.script(GARBAGE, VALID)
    run = advance(submit(summary_flow))

    assert run.status == Run.Status.SUCCEEDED and run.step_attempts == 0
    assert run.checkpoints.get().output == {"intent": "refund", "summary": "double charge on order #123"}
    assert len(llm.requests) == 2
    repair = llm.requests[1].user_prompt
    assert "Your previous reply could not be used: the reply contains no JSON object" in repair
    assert GARBAGE in repair and TEXT["text"] in repair
    assert "run.step.retrying" not in events(run)


# 3. Budget exhaustion and the hop limit ---------------------------------------------------------


def two_builtin_steps(name: str, **limits) -> dict:
    return workflow(
        name,
        {"name": "triage", "agent": "intake_classifier"},
        {"name": "draft", "agent": "response_writer"},
        **limits,
    )


BUILTIN_BINDINGS = {
    "intake_classifier": {"prompt": "triage", "model_config": "builtin-pricey"},
    "response_writer": {"prompt": "draft_reply", "model_config": "builtin-small"},
}
PRICEY = {
    "provider": "builtin",
    "model": "rules-v1",
    "price_per_1k_tokens": {"input": 1.0, "output": 1.0},
}


def assert_denied_transition(run: Run, reason: str) -> None:
    assert run.status == Run.Status.FAILED and run.finished_at is not None
    assert run.error.startswith("transition triage -> draft denied:") and reason in run.error
    assert states(run) == [] and run.current_state == "triage"
    denied = PolicyDecision.objects.get(decision_point="step.transition", run_id=str(run.pk))
    assert denied.allow is False and any(reason in r for r in denied.reasons)
    failed = event(run, "run.failed").payload
    assert failed["state"] == "triage" and failed["error"] == run.error


def test_a_step_that_exhausts_the_budget_fails_the_run_at_the_next_transition(publish, submit):
    publish(
        two_builtin_steps("budget_flow", max_cost_usd=0.001),
        bindings=BUILTIN_BINDINGS,
        model_configs={"builtin-pricey": PRICEY},
    )
    run = submit("budget_flow")
    assert run.budget == {"cost_usd": 0.001}

    run = advance(run)

    assert_denied_transition(run, "budget exceeded: cost_usd")


def test_the_hop_limit_denies_the_transition_past_it(publish, submit):
    publish(
        two_builtin_steps("hop_flow", max_hops=1),
        bindings=BUILTIN_BINDINGS,
        model_configs={"builtin-pricey": PRICEY},
    )

    run = advance(submit("hop_flow"))

    assert_denied_transition(run, "hop limit 1 reached")


def test_within_its_limits_the_same_workflow_runs_to_the_end(publish, submit):
    publish(
        two_builtin_steps("roomy_flow", max_hops=2, max_cost_usd=10),
        bindings=BUILTIN_BINDINGS,
        model_configs={"builtin-pricey": PRICEY},
    )

    run = advance(submit("roomy_flow"))

    assert run.status == Run.Status.SUCCEEDED and states(run) == ["triage", "draft"]
    assert run.hop_count == 2 and 0 < run.spent["cost_usd"] <= 10


# 4. A deadline that has already passed ----------------------------------------------------------


def test_a_run_past_its_deadline_is_denied_its_first_transition(publish, submit):
    publish(
        two_builtin_steps("late_flow"), bindings=BUILTIN_BINDINGS, model_configs={"builtin-pricey": PRICEY}
    )

    run = advance(submit("late_flow", deadline=timezone.now() - timedelta(hours=1)))

    assert_denied_transition(run, "deadline passed")


def test_a_tool_step_past_the_deadline_is_never_called(publish, submit, tool_server):
    publish(
        workflow("late_write", {"name": "open_ticket", "tool": "tickets.create", "agent": "ops_agent"}),
        tools={"tickets.create": http_tool(tool_server, "tickets.create")},
    )

    run = advance(submit("late_write", deadline=timezone.now() - timedelta(minutes=1)))

    assert run.status == Run.Status.FAILED
    assert run.error == "policy denied tickets.create: deadline passed"
    assert tool_server.requests == [] and not Effect.objects.exists()
    assert PolicyDecision.objects.get(decision_point="tool.call").allow is False


def test_a_step_that_ends_after_the_deadline_does_not_succeed(publish, submit, tool_server):
    # Decided on the step's start, in time; the reply comes back after the deadline.
    publish(
        workflow(
            "slow_write",
            {"name": "open_ticket", "tool": "tickets.create", "agent": "ops_agent", "timeout_s": 10},
            {"name": "reply", "human_if": ["never_true == true"]},
        ),
        tools={"tickets.create": http_tool(tool_server, "tickets.create")},
    )
    run = submit("slow_write", {"never_true": False}, deadline=timezone.now() + timedelta(seconds=1.5))
    tool_server.delay_next(2.5)

    run = advance(run)

    assert run.status != Run.Status.SUCCEEDED and states(run) == []
    assert run.error == "transition open_ticket -> reply denied: deadline passed"
    decisions = PolicyDecision.objects.filter(decision_point="step.transition", run_id=str(run.pk))
    # The decision taken in time stays in the log beside the one taken on the commit's time.
    assert [d.allow for d in decisions.order_by("pk")] == [True, False]
    assert tool_server.effects == 1
    assert Effect.objects.get(run=run).status != Effect.Status.INTENDED  # what the tool did is kept


# 5. A transition the workflow does not declare ---------------------------------------------------


def publish_routing_flow(publish, llm, tool_server) -> None:
    """A classifier routing to a refund or an answer, on `llm` and `tool_server`."""
    publish(
        workflow(
            "routing_flow",
            {"name": "classify", "agent": "intake_classifier", "next": ["refund", "answer"]},
            {"name": "refund", "tool": "refunds.create", "agent": "ops_agent", "next": ["end"]},
            {"name": "answer", "tool": "answers.send", "agent": "ops_agent"},
        ),
        bindings={"intake_classifier": {"prompt": "summary", "model_config": "fake-llm"}},
        prompts={"summary": SUMMARY_PROMPT},
        model_configs={"fake-llm": remote_model(llm)},
        tools={
            "refunds.create": http_tool(tool_server, "refunds.create"),
            "answers.send": http_tool(tool_server, "answers.send"),
        },
    )


def test_a_model_proposing_an_undeclared_state_fails_the_run_and_nothing_else_runs(
    publish, submit, llm, tool_server
):
    publish_routing_flow(publish, llm, tool_server)
    llm.script('{"next": "delete_everything", "intent": "refund"}')

    run = advance(submit("routing_flow"))

    assert run.status == Run.Status.FAILED
    assert run.error.startswith("forbidden transition:") and "'delete_everything'" in run.error
    assert "not allowed from 'classify'" in run.error
    assert states(run) == [] and run.hop_count == 0
    assert tool_server.requests == [] and not Effect.objects.exists()
    assert not PolicyDecision.objects.filter(decision_point__in=["tool.call", "step.transition"]).exists()
    assert events(run) == ["run.created", "run.started", "run.failed"]


# 6. Compensation of completed effects, newest first ----------------------------------------------


@pytest.fixture
def saga(publish, submit, tool_server, settings):
    """Two compensable writes, then a write the tool server refuses; one step per advance."""
    settings.RUN_TIME_SLICE_SECONDS = 0
    publish(
        workflow(
            "saga_flow",
            {"name": "reserve", "tool": "stock.reserve", "agent": "ops_agent", "args": {"sku": "A-1"}},
            {"name": "charge", "tool": "payments.charge", "agent": "ops_agent", "args": {"amount": 120}},
            {"name": "ship", "tool": "shipments.create", "agent": "ops_agent", "args": {"sku": "A-1"}},
        ),
        tools={
            "stock.release": http_tool(tool_server, "stock.release"),
            "payments.refund": http_tool(tool_server, "payments.refund"),
            "stock.reserve": http_tool(tool_server, "stock.reserve", compensation_tool="stock.release"),
            "payments.charge": http_tool(tool_server, "payments.charge", compensation_tool="payments.refund"),
            "shipments.create": http_tool(tool_server, "shipments.create"),
        },
    )
    run = advance(advance(submit("saga_flow")))
    assert states(run) == ["reserve", "charge"] and run.status == Run.Status.RUNNING
    return run


def test_a_non_retryable_failure_compensates_the_completed_effects_in_reverse_order(saga, tool_server):
    tool_server.fail_next(1, 400)  # the shipment is refused: no effect, no retry

    run = advance(saga)

    assert run.status == Run.Status.COMPENSATED and run.finished_at is not None
    assert "shipments.create failed" in run.error and "HTTP 400" in run.error
    assert posts(tool_server, "payments.refund", "stock.release") == ["payments.refund", "stock.release"]
    undo = {
        r.path.strip("/"): r.body["args"]
        for r in tool_server.requests
        if r.path.endswith((".refund", ".release"))
    }
    assert undo["payments.refund"] == {"amount": 120, "original_effect_id": "payments.charge:1"}
    assert undo["stock.release"] == {"sku": "A-1", "original_effect_id": "stock.reserve:1"}
    by_tool = dict(Effect.objects.values_list("tool", "status"))
    assert by_tool == {
        "stock.reserve": Effect.Status.COMPENSATED,
        "payments.charge": Effect.Status.COMPENSATED,
        "shipments.create": Effect.Status.REJECTED,
    }
    assert events(run)[-2:] == ["run.compensating", "run.compensated"]
    assert event(run, "run.compensated").payload == {
        "compensated": ["payments.charge", "stock.reserve"],
        "failed": [],
    }
    assert run.lease_owner == ""


def test_a_failed_compensation_stops_there_and_holds_the_run_for_an_operator(saga, tool_server):
    tool_server.fail_next(2, 400)  # the shipment, then the refund of the charge

    run = advance(saga)

    assert run.status == Run.Status.COMPENSATION_FAILED and run.finished_at is None
    assert posts(tool_server, "payments.refund", "stock.release") == ["payments.refund"]
    by_tool = dict(Effect.objects.values_list("tool", "status"))
    assert by_tool["payments.charge"] == Effect.Status.COMPENSATION_FAILED
    assert by_tool["stock.reserve"] == Effect.Status.COMMITTED  # older: left, in order, for the operator
    assert event(run, "run.compensation_failed").payload == {"compensated": [], "failed": ["payments.charge"]}
    assert run.lease_owner == "" and advance(run).status == Run.Status.COMPENSATION_FAILED


def test_an_effect_that_broke_its_result_schema_is_compensated_with_the_others(publish, submit, tool_server):
    publish(
        workflow(
            "contract_flow",
            {"name": "reserve", "tool": "stock.reserve", "agent": "ops_agent", "args": {"sku": "A-1"}},
            {"name": "ship", "tool": "shipments.create", "agent": "ops_agent", "args": {"sku": "A-1"}},
        ),
        tools={
            "stock.release": http_tool(tool_server, "stock.release"),
            "shipments.cancel": http_tool(tool_server, "shipments.cancel"),
            "stock.reserve": http_tool(tool_server, "stock.reserve", compensation_tool="stock.release"),
            "shipments.create": http_tool(
                tool_server,
                "shipments.create",
                compensation_tool="shipments.cancel",
                result_schema={"type": "object", "required": ["tracking_number"]},
            ),
        },
    )

    run = advance(submit("contract_flow"))

    assert run.status == Run.Status.COMPENSATED
    assert "result outside result_schema" in run.error
    # The shipment happened (the tool server made it) although its reply broke the contract.
    assert posts(tool_server, "shipments.cancel", "stock.release") == ["shipments.cancel", "stock.release"]
    shipment = Effect.objects.get(tool="shipments.create")
    assert (shipment.status, shipment.effect_id) == (Effect.Status.COMPENSATED, "shipments.create:1")
    assert Effect.objects.get(tool="stock.reserve").status == Effect.Status.COMPENSATED


# 7. Duplicate delivery, cancel, retry from the dead-letter queue ----------------------------------


@pytest.fixture
def gated_flow(publish):
    publish(
        workflow(
            "gated_flow",
            {"name": "review", "human_if": ["amount > 100"]},
            {"name": "triage", "agent": "intake_classifier"},
        ),
        bindings={"intake_classifier": {"prompt": "triage", "model_config": "builtin-small"}},
    )
    return "gated_flow"


def test_delivering_a_finished_run_again_changes_nothing(gated_flow, submit):
    run = advance(submit(gated_flow, {**TEXT, "amount": 50}))
    assert run.status == Run.Status.SUCCEEDED and states(run) == ["review", "triage"]
    before = (events(run), PolicyDecision.objects.count(), run.updated_at)

    run = advance(advance(run, worker="w2"), worker="w3")

    assert run.status == Run.Status.SUCCEEDED and states(run) == ["review", "triage"]
    assert (events(run), PolicyDecision.objects.count(), run.updated_at) == before
    services.run_advance(run_id=str(uuid.uuid4()), worker="w4")  # a message for no run is dropped


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite locks the whole database")
def test_a_cancel_locks_the_open_request_before_the_run_as_a_decision_does(gated_flow, submit, requester):
    from django.test.utils import CaptureQueriesContext

    run = advance(submit(gated_flow, {**TEXT, "amount": 250}))
    with CaptureQueriesContext(connection) as statements:
        services.run_cancel(run=run, actor=actor_for(requester))

    locking = [query["sql"] for query in statements.captured_queries if "FOR UPDATE" in query["sql"]]
    assert [sql.split(" FROM ")[1].split()[0].strip('"') for sql in locking] == [
        "runs_pendingaction",
        "runs_run",
    ]


def test_cancelling_a_waiting_run_supersedes_its_pending_action(gated_flow, submit, requester, reviewer):
    run = advance(submit(gated_flow, {**TEXT, "amount": 250}))
    assert run.status == Run.Status.WAITING_APPROVAL
    pending = run.pending_actions.get()
    assert pending.status == PendingAction.Status.PENDING and pending.reasons == ["amount > 100"]

    services.run_cancel(run=run, actor=actor_for(requester), reason="customer withdrew")

    run.refresh_from_db()
    pending.refresh_from_db()
    assert run.status == Run.Status.CANCELLED and run.finished_at is not None
    assert pending.status == PendingAction.Status.SUPERSEDED
    assert event(run, "run.cancelled").payload == {"from": "waiting_approval", "reason": "customer withdrew"}
    with pytest.raises(Conflict, match="already superseded"):
        services.pending_action_decide(pending_action_id=pending.pk, approved=True, actor=actor_for(reviewer))
    assert advance(run).status == Run.Status.CANCELLED and states(run) == []
    with pytest.raises(Conflict, match="cannot be cancelled"):
        services.run_cancel(run=run, actor=actor_for(requester))


def test_a_dead_letter_retried_with_a_repaired_input_resumes_at_the_failed_step(
    publish, submit, llm, requester, settings
):
    settings.RUN_STEP_MAX_ATTEMPTS = 1
    publish(
        workflow(
            "retry_flow",
            {"name": "triage", "agent": "intake_classifier"},
            {"name": "summarise", "agent": "policy_checker"},
        ),
        bindings={
            "intake_classifier": {"prompt": "triage", "model_config": "builtin-small"},
            "policy_checker": {"prompt": "summary", "model_config": "fake-llm"},
        },
        prompts={"summary": SUMMARY_PROMPT},
        model_configs={"fake-llm": remote_model(llm)},
    )
    llm.script(GARBAGE, GARBAGE)
    run = advance(submit("retry_flow", {"text": "REFUND!!! order #123 plz ~~ charged 2x ~~"}))
    assert run.status == Run.Status.DEAD_LETTERED and states(run) == ["triage"]
    original_input = run.input
    repaired = {"text": "Please refund order #123, I was charged twice"}

    llm.script(VALID)
    services.run_retry(
        run=run, actor=actor_for(requester), repaired_input=repaired, reason="cleaned the text"
    )
    run = advance(run)

    assert run.status == Run.Status.SUCCEEDED
    assert states(run) == ["triage", "summarise"]  # the triage was not run again
    assert run.input == repaired and run.error == ""
    assert repaired["text"] in llm.requests[-1].user_prompt
    retried = event(run, "run.retried").payload
    assert retried["from"] == "dead_lettered" and retried["state"] == "summarise"
    assert retried["input_digest_before"] == digest(original_input)
    assert retried["input_digest_after"] == digest(repaired)
    assert "malformed model output" in retried["error"]
    # The retried call is a new request: it must not reuse the key of the dead-lettered attempt.
    keys = [r.headers["idempotency-key"] for r in llm.requests]
    assert len(set(keys)) == len(keys)


# 8. A large step output travels by reference ------------------------------------------------------


def test_a_large_output_is_stored_once_and_the_next_step_sees_all_of_it(publish, submit, llm, settings):
    settings.RUN_PAYLOAD_INLINE_BYTES = 200
    publish(
        workflow(
            "large_flow",
            {"name": "draft", "agent": "response_writer"},
            {"name": "check", "agent": "policy_checker"},
        ),
        bindings={
            "response_writer": {"prompt": "draft_reply", "model_config": "builtin-small"},
            "policy_checker": {"prompt": "policy_check", "model_config": "fake-llm"},
        },
        model_configs={"fake-llm": remote_model(llm)},
    )
    llm.script('{"score": 0.95, "issues": []}')

    run = advance(submit("large_flow", {"text": "I want my money back", "intent": "refund"}))

    assert run.status == Run.Status.SUCCEEDED
    draft, check = run.checkpoints.order_by("sequence")
    assert set(draft.output) == {"$ref", "size"} and draft.output["size"] > 200
    payload = Payload.objects.get()  # stored once, however often the envelope referred to it
    assert payload.digest == draft.output["$ref"] and payload.size == draft.output["size"]
    reply = payload.content["reply"]
    assert reply.startswith("Hello,") and len(reply) > 100
    assert reply in llm.requests[0].user_prompt  # the next step saw the whole value
    assert check.output == {"score": 0.95, "issues": []}
    completed = AuditEvent.objects.filter(run_id=str(run.pk), action="run.step.completed").order_by("seq")
    assert completed[0].payload["output_digest"] == digest(payload.content)


# 9. A worker that died mid-step --------------------------------------------------------------------


def test_a_step_that_comes_back_with_other_arguments_under_the_same_key_fails_closed(
    publish, submit, tool_server
):
    publish(
        workflow(
            "refund_again",
            {
                "name": "refund",
                "tool": "payments.refund",
                "agent": "ops_agent",
                "args": {"case_id": "=case_id", "amount": "=amount"},
            },
        ),
        tools={"payments.refund": http_tool(tool_server, "payments.refund")},
    )
    run = submit("refund_again")
    released = released_workflow(run.release_id)
    step = released.step("refund")
    first = execute_tool_step(
        run, released, step, {}, time.time(), facts={"case_id": run.case_id, "amount": 10}
    )
    assert first.kind == "done" and tool_server.effects == 1, first.error

    replayed = execute_tool_step(
        run, released, step, {}, time.time(), facts={"case_id": run.case_id, "amount": 10}
    )
    assert replayed.kind == "done" and replayed.details["replayed"] is True

    other = execute_tool_step(
        run, released, step, {}, time.time(), facts={"case_id": run.case_id, "amount": 20}
    )
    assert (other.kind, other.retryable) == ("fail", False)
    assert "made with other arguments" in other.error
    # Over the approval threshold, too: no reviewer is asked about an action that cannot run.
    large = execute_tool_step(
        run, released, step, {}, time.time(), facts={"case_id": run.case_id, "amount": 900}
    )
    assert (large.kind, large.retryable) == ("fail", False)
    assert tool_server.effects == 1 and Effect.objects.get().args == {"case_id": run.case_id, "amount": 10}


def test_a_run_whose_worker_died_mid_step_is_swept_and_finishes_without_a_second_effect(
    publish, submit, tool_server
):
    publish(
        workflow(
            "sweep_flow",
            {
                "name": "open_ticket",
                "tool": "tickets.create",
                "agent": "ops_agent",
                "args": {"case_id": "=case_id"},
            },
        ),
        tools={"tickets.create": http_tool(tool_server, "tickets.create")},
    )
    run = submit("sweep_flow")
    dead = "worker-9@gone:4242:0123456789ab"
    # The dead worker claimed the run, made the call (the effect happened), then died before
    # committing: its lease ran out with the write-ahead row still "intended".
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.RUNNING, lease_owner=dead, lease_expires_at=timezone.now() - timedelta(minutes=5)
    )
    stale = Run.objects.get(pk=run.pk)
    released = released_workflow(stale.release_id)
    execute_tool_step(stale, released, released.step("open_ticket"), {}, time.time())
    assert tool_server.effects == 1 and Effect.objects.get().status == Effect.Status.INTENDED

    assert services.runs_sweep_expired_leases() == 1

    swept = Run.objects.get(pk=run.pk)
    assert swept.lease_owner == "" and swept.lease_expires_at > timezone.now()
    assert event(run, "run.lease.expired").payload == {"state": "open_ticket", "previous_owner": dead}
    assert services.runs_sweep_expired_leases() == 0  # its new lease has not expired

    run = advance(run, worker="w2")

    assert run.status == Run.Status.SUCCEEDED
    # The write-ahead row was only "intended": the call is made again under its key, and the
    # tool server answers with the first reply instead of a second effect.
    assert tool_server.effects == 1 and posts(tool_server) == ["tickets.create", "tickets.create"]
    effect = Effect.objects.get()
    assert (effect.status, effect.effect_id) == (Effect.Status.COMMITTED, "tickets.create:1")
    assert run.checkpoints.get().details["replayed"] is True

    # Should the dead worker come back, it commits nothing: the run is no longer its own.
    assert execute_released_step(stale, dead, enqueue=enqueue) is False
    assert run.checkpoints.count() == 1 and tool_server.effects == 1
    assert Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED


@pytest.mark.skipif(connection.vendor != "postgresql", reason="only PostgreSQL refuses \\u0000 in JSON")
def test_a_step_whose_output_cannot_be_stored_fails_the_run_instead_of_poisoning_the_queue(
    summary_flow, submit, llm
):
    llm.script('{"intent": "refund", "summary": "nul \\u0000 inside"}')  # PostgreSQL cannot store it
    run = submit(summary_flow)

    run = advance(run)  # must not raise: a raising worker keeps the lease and the sweeper redelivers

    assert run.status == Run.Status.FAILED and run.lease_owner == ""
    assert run.error == "step summarise raised DataError: unsupported Unicode escape sequence"
    assert not run.checkpoints.exists() and event(run, "run.failed").payload["state"] == "summarise"
    assert services.runs_sweep_expired_leases() == 0
    assert len(llm.requests) == 1


def test_a_run_whose_worker_died_while_compensating_is_swept_and_compensated(saga, tool_server):
    # The worker recorded "compensating" and died before undoing anything.
    Run.objects.filter(pk=saga.pk).update(
        status=Run.Status.COMPENSATING,
        error="shipments.create failed: HTTP 400",
        lease_owner="worker-9@gone:4242:0123456789ab",
        lease_expires_at=timezone.now() - timedelta(minutes=5),
    )

    assert services.runs_sweep_expired_leases() == 1
    run = advance(saga, worker="w2")

    assert run.status == Run.Status.COMPENSATED and run.finished_at is not None
    assert posts(tool_server, "payments.refund", "stock.release") == ["payments.refund", "stock.release"]
    assert set(Effect.objects.values_list("status", flat=True)) == {Effect.Status.COMPENSATED}
    assert run.error == "shipments.create failed: HTTP 400"


def test_a_resumed_compensation_stops_where_the_dead_worker_met_a_failed_one(saga, tool_server):
    # The worker failed to undo the charge, marked it, and died before holding the run.
    Effect.objects.filter(tool="payments.charge").update(status=Effect.Status.COMPENSATION_FAILED)
    Run.objects.filter(pk=saga.pk).update(
        status=Run.Status.COMPENSATING,
        lease_owner="worker-9@gone:4242:0123456789ab",
        lease_expires_at=timezone.now() - timedelta(minutes=5),
    )

    assert services.runs_sweep_expired_leases() == 1
    run = advance(saga, worker="w2")

    assert run.status == Run.Status.COMPENSATION_FAILED and run.finished_at is None
    assert posts(tool_server, "payments.refund", "stock.release") == []
    assert Effect.objects.get(tool="stock.reserve").status == Effect.Status.COMMITTED
    assert event(run, "run.compensation_failed").payload == {"compensated": [], "failed": ["payments.charge"]}


def test_a_retried_compensation_failure_undoes_the_effects_again_and_never_goes_forward(
    saga, tool_server, requester
):
    tool_server.fail_next(2, 400)  # the shipment, then the refund of the charge
    run = advance(saga)
    assert run.status == Run.Status.COMPENSATION_FAILED

    services.run_retry(run=run, actor=actor_for(requester), reason="payments are back")
    run = advance(run)

    assert run.status == Run.Status.COMPENSATED and run.finished_at is not None
    assert run.error.startswith("shipments.create failed")
    assert posts(tool_server, "payments.refund", "stock.release") == [
        "payments.refund",
        "payments.refund",
        "stock.release",
    ]
    assert tool_server.effects_per_operation["shipments.create"] == 0  # the run never went forward
    assert states(run) == ["reserve", "charge"]
    assert dict(Effect.objects.values_list("tool", "status")) == {
        "stock.reserve": Effect.Status.COMPENSATED,
        "payments.charge": Effect.Status.COMPENSATED,
        "shipments.create": Effect.Status.REJECTED,
    }
    assert events(run)[-3:] == ["run.compensation_failed", "run.retried", "run.compensated"]
    retried = event(run, "run.retried").payload
    assert (retried["from"], retried["compensation_resumed"]) == ("compensation_failed", ["payments.charge"])
    assert event(run, "run.compensated").payload == {
        "compensated": ["payments.charge", "stock.reserve"],
        "failed": [],
    }


def test_a_compensation_failure_is_not_retried_with_a_repaired_input(saga, tool_server, requester):
    tool_server.fail_next(2, 400)
    run = advance(saga)

    with pytest.raises(InvalidInput, match="compensation failed"):
        services.run_retry(run=run, actor=actor_for(requester), repaired_input={"text": "ship it anyway"})

    run.refresh_from_db()
    assert run.status == Run.Status.COMPENSATION_FAILED and run.input == TEXT
    assert Effect.objects.get(tool="payments.charge").status == Effect.Status.COMPENSATION_FAILED
    assert "run.retried" not in events(run)


def advance_until_the_call_is_out(run: Run, tool_server: ToolServer) -> threading.Thread:
    """A worker thread advancing `run`, once its tool call has reached the tool server."""

    def work() -> None:
        try:
            services.run_advance(run_id=str(run.pk), worker="w1")
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.monotonic() + 10
    while tool_server.effects == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return worker


@pytest.mark.django_db(transaction=True)
def test_a_step_slower_than_the_lease_keeps_its_run_while_its_call_is_out(
    publish, submit, tool_server, settings
):
    settings.RUN_LEASE_SECONDS = 2
    step = {
        "name": "open_ticket",
        "tool": "tickets.create",
        "agent": "ops_agent",
        "args": {"n": 1},
        "timeout_s": 5,
    }
    publish(workflow("slow_call", step), tools={"tickets.create": http_tool(tool_server, "tickets.create")})
    run = submit("slow_call")
    tool_server.delay_next(3.5)  # the reply comes after the lease the claim gave has run out
    worker = advance_until_the_call_is_out(run, tool_server)
    time.sleep(2.5)
    swept = services.runs_sweep_expired_leases()  # what beat runs while the call is out
    worker.join(timeout=15)

    assert swept == 0 and "run.lease.expired" not in events(run)
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED and states(run) == ["open_ticket"]
    assert run.claims_since_progress == 0


@pytest.mark.django_db(transaction=True)
def test_a_run_cancelled_while_its_tool_call_is_out_records_the_effect_the_call_made(
    publish, submit, tool_server, requester
):
    publish(
        workflow(
            "slow_write",
            {"name": "open_ticket", "tool": "tickets.create", "agent": "ops_agent", "args": {"n": 1}},
            {"name": "close_ticket", "tool": "tickets.close", "agent": "ops_agent", "args": {"n": 1}},
        ),
        tools={
            "tickets.create": http_tool(tool_server, "tickets.create"),
            "tickets.close": http_tool(tool_server, "tickets.close"),
        },
    )
    run = submit("slow_write")
    tool_server.delay_next(1.5)  # the ticket is made; the reply comes later
    worker = advance_until_the_call_is_out(run, tool_server)
    services.run_cancel(run=run, actor=actor_for(requester), reason="customer withdrew")
    worker.join(timeout=15)

    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED and states(run) == []
    effect = Effect.objects.get()
    assert (effect.status, effect.effect_id) == (Effect.Status.COMMITTED, "tickets.create:1")
    assert effect.result["args"] == {"n": 1}
    assert posts(tool_server) == ["tickets.create"]  # nothing after the cancel
