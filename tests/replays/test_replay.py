"""Replays: deterministic ones reproduce recorded runs without calling anything; what-if ones
show what another release would change; every replay is audited."""

import copy
from decimal import Decimal

import pytest
from django.db.models import QuerySet

from controlplane.errors import Conflict, Forbidden, InvalidInput
from controlplane.identity import actor_for
from controlplane.models import AuditEvent
from policy.models import PolicyDecision
from registry.models import Agent, Channel, Release
from registry.services.bundles import bundle_apply
from replays import services
from replays.models import Replay, ReplayBatch
from runs import models as run_models
from runs.models import Run, StepCheckpoint
from sandbox import models as sandbox_models
from tests.support.workflows import advance, http_tool, workflow

pytestmark = pytest.mark.django_db


def replayed(run: Run, user, release: Release | None = None, reason: str = "audit sample") -> Replay:
    replay = services.replay_request(run=run, release=release, reason=reason, user=user)
    return services.replay_execute(replay_id=replay.pk)


def production_release(workflow: str) -> Release:
    return Channel.objects.get(workflow=workflow, name="production").release


def side_effect_counts() -> tuple[int, ...]:
    return (
        run_models.Effect.objects.count(),
        sandbox_models.Effect.objects.count(),
        sandbox_models.Refund.objects.count(),
        sandbox_models.CatalogEntry.objects.count(),
        PolicyDecision.objects.count(),
        StepCheckpoint.objects.count(),
    )


def test_deterministic_replay_of_every_demo_workflow_reproduces_its_transitions(finished_demo, auditor):
    before = side_effect_counts()
    workflows = set()

    for run in finished_demo:
        replay = replayed(run, auditor)

        recorded = list(run.checkpoints.order_by("sequence").values_list("state", flat=True))
        assert replay.status == Replay.Status.DONE and replay.mode == Replay.Mode.DETERMINISTIC
        assert (replay.outcome, replay.first_difference) == ("reproduced", ""), (run.case_id, replay.report)
        assert [step["state"] for step in replay.report["steps"]] == recorded
        assert replay.report["end"] == replay.report["original_end"]
        assert replay.report["model_calls"] == 0
        workflows.add(run.workflow)

    assert workflows == {"builtin.intake", "support_case_resolution", "data_pipeline_review"}
    assert side_effect_counts() == before  # nothing called, nothing decided for real, nothing written


def test_a_replay_is_audited_with_who_why_and_outcome(finished_demo, auditor):
    run = next(r for r in finished_demo if r.case_id == "CASE-1002")

    replay = replayed(run, auditor, reason="quarterly sample for SOX review")

    events = {
        e.action: e for e in AuditEvent.objects.filter(run_id=str(run.pk), action__startswith="run.replay")
    }
    asked, done = events["run.replay_requested"], events["run.replayed"]
    assert asked.actor == done.actor == f"user:{auditor.username}"
    assert asked.payload["reason"] == "quarterly sample for SOX review"
    assert asked.payload["mode"] == "deterministic" and asked.payload["replay"] == replay.pk
    assert (done.payload["outcome"], done.payload["changed_decisions"]) == ("reproduced", 0)


def test_replay_shows_where_a_run_diverges_from_its_recording(finished_demo, platform_user):
    """A recorded output that no longer leads where the run went (here: a policy score changed
    after the fact) is reported at its step, with the transition that differs."""
    run = next(r for r in finished_demo if r.case_id == "CASE-1001")
    checkpoint = run.checkpoints.get(state="validate")
    StepCheckpoint.objects.filter(pk=checkpoint.pk).update(output={**checkpoint.output, "score": 0.5})

    replay = replayed(run, platform_user)

    assert replay.outcome == "diverged"
    assert replay.first_difference.startswith(f"step {checkpoint.sequence} (validate)")
    validate = replay.report["steps"][checkpoint.sequence - 1]
    assert validate["next_state"] == "human" and validate["original"]["next_state"] == "approve"
    assert "next state approve -> human" in validate["differences"]
    assert replay.report["end"] == "waiting_approval"


def test_a_run_refused_by_policy_replays_to_the_same_refusal(write_with_amount, submit, platform_user):
    """The agent was deprecated when the run called its tool: the replay judges the call with the
    agent as it was then, though it is active again now."""
    run = submit("credit_flow")
    Agent.objects.filter(slug="ops_agent").update(status=Agent.Status.DEPRECATED)
    run = advance(run)
    assert run.status == Run.Status.FAILED and "policy denied" in run.error
    Agent.objects.filter(slug="ops_agent").update(status=Agent.Status.ACTIVE)

    replay = replayed(run, platform_user)

    assert replay.outcome == "reproduced", replay.report
    assert (replay.report["end"], replay.report["end_state"]) == ("failed", "credit")
    assert replay.report["error"] == run.error
    (step,) = replay.report["steps"]
    assert step["decisions"][0]["allow"] is False and step["differences"] == []


@pytest.fixture
def write_with_amount(publish, tool_server, settings):
    """A write tool moving 120: below the default approval threshold (500)."""
    settings.RUN_TIME_SLICE_SECONDS = 60
    tools = {"payments.credit": http_tool(tool_server, "payments.credit")}
    definition = workflow(
        "credit_flow",
        {"name": "credit", "tool": "payments.credit", "agent": "ops_agent", "args": {"amount": 120}},
    )
    release_id = publish(definition, tools=tools)
    return release_id, definition, tools


def _release_with_policy_data(support_bundle, platform_user, definition, tools, approval: dict) -> Release:
    bundle = copy.deepcopy(support_bundle)
    policy = bundle["artifacts"]["policy_bundle"]["default"]
    policy["data"]["baton"]["approval"].update(approval)
    # The shipped tests pin the shipped settings: this variant is evaluated, not tested.
    policy["modules"] = {
        name: text for name, text in policy["modules"].items() if not name.endswith("_test.rego")
    }
    bundle["artifacts"]["policy_bundle"] = {"strict": policy}
    bundle["artifacts"]["tool"].update(tools)
    bundle["workflows"] = {definition["workflow"]: definition}
    bundle["releases"] = [{"workflow": definition["workflow"], "policy_bundle": "strict", "agents": {}}]
    report = bundle_apply(bundle=bundle, author=platform_user, actor=actor_for(platform_user))
    return Release.objects.get(pk=report.releases[0])


def test_what_if_with_a_stricter_policy_shows_the_changed_decision(
    write_with_amount, submit, tool_server, support_bundle, platform_user
):
    release_id, definition, tools = write_with_amount
    run = advance(submit("credit_flow"))
    assert run.status == Run.Status.SUCCEEDED and tool_server.effects == 1
    stricter = _release_with_policy_data(
        support_bundle, platform_user, definition, tools, {"amount_threshold": 100}
    )
    assert stricter.pk != release_id

    replay = replayed(run, platform_user, release=stricter, reason="lower the approval threshold to 100?")

    assert replay.mode == Replay.Mode.WHAT_IF and replay.release_id == stricter.pk
    assert replay.outcome == "diverged"
    (step,) = replay.report["steps"]
    (decision,) = [d for d in step["decisions"] if d["point"] == "tool.call"]
    assert (decision["allow"], decision["require_approval"]) == (True, True)
    assert decision["original"]["require_approval"] is False
    assert "policy tool.call payments.credit: allow -> allow with approval" in step["differences"]
    assert replay.report["changed_decisions"] == 1
    assert replay.report["end"] == "waiting_approval" and replay.report["original_end"] == "succeeded"
    assert tool_server.effects == 1  # the tool was not called again


def test_what_if_asks_the_model_only_where_its_configuration_changed(finished_demo, platform_user):
    """Production's canary release runs the response writer on another model config: only the
    draft step is asked afresh; every other answer comes from the recording."""
    run = next(r for r in finished_demo if r.case_id == "CASE-1001")
    canary = production_release(run.workflow)
    assert canary.pk != run.release_id

    replay = replayed(run, platform_user, release=canary)

    sources = {step["state"]: step["source"] for step in replay.report["steps"]}
    assert sources["draft"] == "model builtin-tuned"
    assert sources["triage"] == sources["validate"] == "recording"
    assert replay.report["model_calls"] == 1


def test_batch_replay_evaluates_a_release_and_attaches_the_summary(finished_demo, platform_user):
    support = [r for r in finished_demo if r.workflow == "support_case_resolution"]
    canary = production_release("support_case_resolution")

    batch = services.replay_batch_request(
        release=canary, last_n=10, reason="before promoting the tuned writer", user=platform_user
    )
    batch = services.replay_batch_execute(batch_id=batch.pk)

    assert batch.status == ReplayBatch.Status.DONE
    assert (batch.total, batch.done, batch.summary["runs"]) == (len(support),) * 3
    assert batch.replays.count() == len(support)
    summary = batch.summary
    assert summary["reproduced"] + summary["diverged"] + summary["incomplete"] == len(support)
    evaluation = canary.evaluations.get(suite="replay")
    assert batch.evaluation == evaluation
    assert evaluation.score == Decimal(str(summary["agreement"]))
    assert evaluation.details["batch"] == batch.pk
    finished = AuditEvent.objects.get(action="release.replayed", object_id=canary.pk)
    assert finished.payload["agreement"] == summary["agreement"]


def test_shadow_runs_are_replayed_once_on_their_shadow_release(finished_demo):
    run = next(r for r in finished_demo if r.case_id == "CASE-1001")
    canary = production_release(run.workflow)
    Run.objects.filter(pk=run.pk).update(shadow_release_id=canary.pk, channel="production")

    assert services.replay_shadow_runs() == 1
    assert services.replay_shadow_runs() == 0
    replay = Replay.objects.get(run=run, shadow=True)
    assert (replay.mode, replay.release_id, replay.requested_by) == ("what_if", canary.pk, None)
    replay = services.replay_execute(replay_id=replay.pk)
    assert replay.status == "done"
    assert AuditEvent.objects.filter(
        action="run.replayed", actor="system:shadow", run_id=str(run.pk)
    ).exists()


def test_who_may_replay_and_what(finished_demo, auditor, requester, reviewer, platform_user):
    run = next(r for r in finished_demo if r.case_id == "CASE-1001")
    canary = production_release(run.workflow)

    with pytest.raises(Forbidden, match="what-if"):
        services.replay_request(run=run, release=canary, reason="curious", user=auditor)
    for user in (requester, reviewer):
        with pytest.raises(Forbidden):
            services.replay_request(run=run, reason="curious", user=user)
    with pytest.raises(InvalidInput, match="reason"):
        services.replay_request(run=run, reason="   ", user=platform_user)
    other = Release.objects.filter(workflow="data_pipeline_review").first()
    with pytest.raises(InvalidInput, match="data_pipeline_review"):
        services.replay_request(run=run, release=other, reason="wrong workflow", user=platform_user)
    builtin = next(r for r in finished_demo if r.workflow.startswith("builtin."))
    with pytest.raises(InvalidInput, match="built-in"):
        services.replay_request(run=builtin, release=canary, reason="no releases", user=platform_user)
    for unfinished in (Run.Status.RUNNING, Run.Status.WAITING_APPROVAL):
        Run.objects.filter(pk=run.pk).update(status=unfinished)
        run.refresh_from_db()
        with pytest.raises(Conflict, match=f"A {unfinished} run has not finished"):
            services.replay_request(run=run, reason="too early", user=platform_user)
    with pytest.raises(Forbidden):
        services.replay_batch_request(release=canary, last_n=5, reason="evaluate", user=auditor)
    with pytest.raises(InvalidInput, match="between 1 and"):
        services.replay_batch_request(release=canary, last_n=0, reason="evaluate", user=platform_user)
    assert not Replay.objects.exists() and not ReplayBatch.objects.exists()


# Deliveries and beat ticks that overlap ---------------------------------------------------------


def delivered_again_after_the_first_read(monkeypatch, model, deliver) -> None:
    """Two workers took the same message: the second one's delivery runs in full just after the
    first one has read its `model` row."""
    real_get = QuerySet.get
    pending = [deliver]

    def get(self, *args, **kwargs):
        found = real_get(self, *args, **kwargs)
        if self.model is model and pending:
            pending.pop()()
        return found

    monkeypatch.setattr(QuerySet, "get", get)


def test_a_replay_delivered_twice_at_once_is_carried_out_once(recorded_run, platform_user, monkeypatch):
    replay = services.replay_request(run=recorded_run, reason="incident review", user=platform_user)
    delivered_again_after_the_first_read(
        monkeypatch, Replay, lambda: services.replay_execute(replay_id=replay.pk)
    )

    replay = services.replay_execute(replay_id=replay.pk)

    assert replay.status == Replay.Status.DONE
    assert AuditEvent.objects.filter(action="run.replayed", run_id=str(recorded_run.pk)).count() == 1


def test_a_batch_delivered_twice_at_once_replays_its_runs_once(recorded_run, platform_user, monkeypatch):
    release = Release.objects.get(pk=recorded_run.release_id)
    batch = services.replay_batch_request(release=release, last_n=5, reason="evaluate", user=platform_user)
    delivered_again_after_the_first_read(
        monkeypatch, ReplayBatch, lambda: services.replay_batch_execute(batch_id=batch.pk)
    )

    services.replay_batch_execute(batch_id=batch.pk)

    batch.refresh_from_db()
    assert (batch.status, batch.total, batch.done) == (ReplayBatch.Status.DONE, 1, 1)
    assert batch.replays.count() == 1 and Replay.objects.count() == 1
    assert AuditEvent.objects.filter(action="release.replayed", object_id=release.pk).count() == 1


def test_overlapping_shadow_ticks_replay_a_run_once(recorded_run, monkeypatch):
    Run.objects.filter(pk=recorded_run.pk).update(shadow_release_id=recorded_run.release_id)
    real_replay_shadow = services.replay_shadow
    other_tick = []

    def replay_shadow(*, run: Run) -> Replay:
        if not other_tick:  # the next tick starts between this one's query and its insert
            other_tick.append(None)
            other_tick[0] = services.replay_shadow_runs()
        return real_replay_shadow(run=run)

    monkeypatch.setattr(services, "replay_shadow", replay_shadow)

    assert services.replay_shadow_runs() == 0  # the other tick made the replay; this one does not fail

    assert other_tick == [1]
    assert Replay.objects.filter(run=recorded_run, shadow=True).count() == 1
    requested = AuditEvent.objects.filter(action="run.replay_requested", run_id=str(recorded_run.pk))
    assert requested.count() == 1
