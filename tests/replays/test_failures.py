"""Runs that failed on a model's answer replay to the same failure: the answer that failed is
kept with the failure event, so the replay needs no model."""

import pytest

from replays import services
from runs.models import Run
from tests.runs.test_failure_modes import (
    BUILTIN_BINDINGS,
    PRICEY,
    publish_routing_flow,
    two_builtin_steps,
)
from tests.support.llm_server import FakeLLM
from tests.support.workflows import advance

pytestmark = pytest.mark.django_db


def replay(run: Run, user) -> dict:
    replay = services.replay_request(run=run, reason="incident review", user=user)
    return services.replay_execute(replay_id=replay.pk).report


def test_a_model_proposing_an_undeclared_state_replays_to_the_same_refusal(
    publish, submit, tool_server, platform_user
):
    with FakeLLM(api_key=None) as llm:
        publish_routing_flow(publish, llm, tool_server)
        llm.script('{"next": "delete_everything", "intent": "refund"}')
        run = advance(submit("routing_flow"))
        assert run.status == Run.Status.FAILED
        asked = len(llm.requests)

        report = replay(run, platform_user)

        assert len(llm.requests) == asked  # the recorded answer stood in for the model
    assert (report["outcome"], report["end"], report["end_state"]) == ("reproduced", "failed", "classify")
    assert report["error"] == run.error
    (classify,) = report["steps"]
    assert classify["output"]["next"] == "delete_everything" and classify["next_state"] is None


def test_a_transition_denied_for_the_budget_replays_to_the_same_denial(publish, submit, platform_user):
    publish(
        two_builtin_steps("budget_flow", max_cost_usd=0.001),
        bindings=BUILTIN_BINDINGS,
        model_configs={"builtin-pricey": PRICEY},
    )
    run = advance(submit("budget_flow"))
    assert run.status == Run.Status.FAILED

    report = replay(run, platform_user)

    assert (report["outcome"], report["end"]) == ("reproduced", "failed"), report
    assert report["error"] == run.error
    (triage,) = report["steps"]
    denied = [d for d in triage["decisions"] if d["point"] == "step.transition"]
    assert denied[0]["allow"] is False and "budget exceeded: cost_usd" in "; ".join(denied[0]["reasons"])
