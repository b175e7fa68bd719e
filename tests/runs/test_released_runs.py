"""Released workflows through the engine, in process: the demo support workflow end to end."""

import pytest

from controlplane.audit import verify_chain
from controlplane.errors import Forbidden, InvalidInput
from controlplane.identity import actor_for
from controlplane.models import AuditEvent
from policy.models import PolicyDecision
from registry.models import Channel
from runs import services
from runs.models import Effect, PendingAction, Run
from sandbox.models import SupportCase

pytestmark = pytest.mark.django_db
SMALL_REFUND = {"text": "Please refund order #123, I want my money back: a refund of $120"}
LARGE_REFUND = {"text": "Refund order #123 now, I want my money back: a refund of $750"}


@pytest.fixture
def submit(demo_registry, requester):
    def submit_task(task_input=SMALL_REFUND, case_id="CASE-1001", **extra) -> Run:
        return services.task_submit(
            requester=requester,
            actor=actor_for(requester),
            workflow="support_case_resolution",
            case_id=case_id,
            input=task_input,
            channel="staging",
            **extra,
        ).run

    return submit_task


def advance(run: Run) -> Run:
    services.run_advance(run_id=str(run.pk), worker="test")
    return Run.objects.get(pk=run.pk)


def approve(run: Run, reviewer) -> Run:
    pending = run.pending_actions.get(status="pending")
    services.pending_action_decide(
        pending_action_id=pending.pk, approved=True, actor=actor_for(reviewer), reason="checked"
    )
    return advance(run)


def states(run: Run) -> list[str]:
    return list(run.checkpoints.order_by("sequence").values_list("state", flat=True))


def test_a_task_runs_the_channels_release(submit):
    run = submit()
    assert run.release_id.startswith("rel_") and run.channel == "staging"
    assert run.current_state == "triage" and run.budget == {"cost_usd": 1.0, "tool_calls": 20}
    assert run.deadline is not None
    assert PolicyDecision.objects.filter(decision_point="run.start", allow=True).count() == 1


def test_the_support_workflow_runs_to_the_irreversible_commit_and_waits_for_a_human(submit, reviewer):
    run = advance(submit())

    assert run.status == Run.Status.WAITING_APPROVAL
    assert states(run) == ["triage", "retrieve", "draft", "validate", "approve"]
    pending = run.pending_actions.get()
    assert pending.state == "commit" and pending.proposed_action["tool"] == "crm.update_case"
    assert pending.proposed_action["args"]["case_id"] == "CASE-1001"
    assert any("irreversible" in reason for reason in pending.reasons)
    assert not Effect.objects.exists()  # nothing was written before the approval

    run = approve(run, reviewer)

    assert run.status == Run.Status.SUCCEEDED
    assert states(run)[-1] == "commit"
    effect = Effect.objects.get()
    assert (effect.status, effect.tool) == ("committed", "crm.update_case")
    assert SupportCase.objects.get(case_id="CASE-1001").status == "resolved"
    assert run.hop_count == 6 and run.spent["tool_calls"] == 2
    assert verify_chain().ok


def test_a_large_refund_stops_at_the_approval_gate_first(submit, reviewer):
    run = advance(submit(LARGE_REFUND))
    gate = run.pending_actions.get()
    assert gate.state == "approve"
    assert "refund_amount > 500" in gate.reasons

    run = approve(run, reviewer)
    assert run.status == Run.Status.WAITING_APPROVAL
    assert run.pending_actions.get(status="pending").state == "commit"
    assert approve(run, reviewer).status == Run.Status.SUCCEEDED


def test_a_rejected_gate_ends_the_run_without_side_effects(submit, reviewer):
    run = advance(submit(LARGE_REFUND))
    services.pending_action_decide(
        pending_action_id=run.pending_actions.get().pk,
        approved=False,
        actor=actor_for(reviewer),
        reason="too much",
    )
    run.refresh_from_db()
    assert run.status == Run.Status.REJECTED
    assert not Effect.objects.exists()
    with pytest.raises(Exception, match="already rejected"):
        services.pending_action_decide(
            pending_action_id=run.pending_actions.get().pk, approved=True, actor=actor_for(reviewer)
        )


def test_a_vague_request_is_handed_to_a_human_by_the_triage(submit):
    run = advance(submit({"text": "I want to speak to a person about my order"}))
    assert run.status == Run.Status.WAITING_APPROVAL
    assert run.pending_actions.get().proposed_action == {"handoff": "triage"}


def test_delivering_the_same_run_again_changes_nothing(submit, reviewer):
    run = approve(advance(submit()), reviewer)
    events = AuditEvent.objects.filter(run_id=str(run.pk)).count()
    assert advance(run).status == Run.Status.SUCCEEDED
    assert AuditEvent.objects.filter(run_id=str(run.pk)).count() == events
    assert Effect.objects.count() == 1


def test_unknown_channel_and_refused_tasks(submit, demo_registry, requester):
    with pytest.raises(InvalidInput, match="no release on channel 'production'"):
        services.task_submit(
            requester=requester,
            actor=actor_for(requester),
            workflow="support_case_resolution",
            case_id="C",
            input={},
        )
    with pytest.raises(Forbidden, match="restricted"):
        submit(sensitivity="restricted")
    assert Run.objects.count() == 0
    assert AuditEvent.objects.filter(action="task.refused").count() == 1
    assert PolicyDecision.objects.filter(decision_point="run.start", allow=False).count() == 1


def test_pending_actions_are_single_use(submit, reviewer):
    run = approve(advance(submit()), reviewer)
    assert run.status == Run.Status.SUCCEEDED
    assert PendingAction.objects.get().status == "approved"


def test_a_release_named_by_id_must_be_on_a_channel_unless_a_platform_engineer_runs_it(
    submit, demo_registry, platform_user
):
    release_id = demo_registry.releases[0]
    assert submit(release=release_id).release_id == release_id  # staging serves it

    Channel.objects.filter(release_id=release_id).update(release=None)  # rolled off every channel
    with pytest.raises(Forbidden, match="on no channel"):
        submit(release=release_id, case_id="CASE-1002")
    assert Run.objects.count() == 1

    tried = services.task_submit(
        requester=platform_user,
        actor=actor_for(platform_user),
        workflow="support_case_resolution",
        case_id="CASE-1003",
        input=SMALL_REFUND,
        release=release_id,
    ).run
    assert tried.release_id == release_id and tried.channel == ""
