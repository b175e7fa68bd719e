from datetime import datetime

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.api.serializers import StrictInputSerializer
from runs.models import PendingAction, StepCheckpoint

from ..models import ApprovalDecision


class DecisionInputSerializer(StrictInputSerializer):
    """A reviewer's decision on the action a request proposes."""

    decision = serializers.ChoiceField(choices=ApprovalDecision.Verdict.choices)
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=2000, help_text="Required to reject."
    )


class DecisionSerializer(serializers.ModelSerializer):
    reviewer = serializers.CharField(source="reviewer.username")

    class Meta:
        model = ApprovalDecision
        fields = ["id", "reviewer", "decision", "reason", "approver_group", "action_hash", "created_at"]


class DecisionRecordedSerializer(DecisionSerializer):
    """The decision, and where the request stands after it."""

    request_status = serializers.CharField(source="pending_action.status")
    approvals = serializers.IntegerField(source="pending_action.approvals")
    quorum = serializers.IntegerField(source="pending_action.quorum")

    class Meta(DecisionSerializer.Meta):
        fields = [*DecisionSerializer.Meta.fields, "pending_action", "request_status", "approvals", "quorum"]


class StepSoFarSerializer(serializers.ModelSerializer):
    class Meta:
        model = StepCheckpoint
        fields = ["sequence", "state", "output", "details", "finished_at"]


class ApprovalListSerializer(serializers.ModelSerializer):
    run = serializers.UUIDField(source="run_id")
    case_id = serializers.CharField(source="run.case_id")
    requested_by = serializers.SerializerMethodField()
    risk_level = serializers.CharField(source="get_risk_rank_display")
    sensitivity = serializers.CharField()

    class Meta:
        model = PendingAction
        fields = [
            "id",
            "run",
            "workflow",
            "case_id",
            "state",
            "status",
            "reasons",
            "proposed_action",
            "action_hash",
            "risk",
            "risk_level",
            "sensitivity",
            "approvers",
            "approver_group",
            "quorum",
            "approvals",
            "escalations",
            "requested_by",
            "due_at",
            "created_at",
            "decided_at",
        ]

    @extend_schema_field(serializers.CharField())
    def get_requested_by(self, pending: PendingAction) -> str:
        return pending.requested_by.get_username() if pending.requested_by_id else ""

    def to_representation(self, pending: PendingAction) -> dict:
        """The fields above, built directly: the list is what clients poll, and DRF's generic
        field-by-field path costs several times more per row (the schema still comes from the
        declared fields; a test holds both to the same output)."""
        return {
            "id": pending.pk,
            "run": str(pending.run_id),
            "workflow": pending.workflow,
            "case_id": pending.run.case_id,
            "state": pending.state,
            "status": pending.status,
            "reasons": pending.reasons,
            "proposed_action": pending.proposed_action,
            "action_hash": pending.action_hash,
            "risk": pending.risk,
            "risk_level": pending.get_risk_rank_display(),
            "sensitivity": pending.sensitivity,
            "approvers": pending.approvers,
            "approver_group": pending.approver_group,
            "quorum": pending.quorum,
            "approvals": pending.approvals,
            "escalations": pending.escalations,
            "requested_by": self.get_requested_by(pending),
            "due_at": _timestamp(pending.due_at),
            "created_at": _timestamp(pending.created_at),
            "decided_at": _timestamp(pending.decided_at),
        }


class ApprovalDetailSerializer(ApprovalListSerializer):
    """Everything a reviewer needs to decide: the original input, what the agent did so far,
    why it stopped, the exact action proposed, and the decisions so far."""

    original_input = serializers.JSONField(source="run.input")
    run_status = serializers.CharField(source="run.status")
    release_id = serializers.CharField(source="run.release_id")
    trace_id = serializers.CharField(source="run.trace_id")
    steps = StepSoFarSerializer(source="run.checkpoints", many=True)
    decisions = DecisionSerializer(many=True)

    to_representation = serializers.ModelSerializer.to_representation

    class Meta(ApprovalListSerializer.Meta):
        fields = [
            *ApprovalListSerializer.Meta.fields,
            "original_input",
            "run_status",
            "release_id",
            "trace_id",
            "policy_decision_id",
            "steps",
            "decisions",
        ]


_TIMESTAMP = serializers.DateTimeField()


def _timestamp(value: datetime | None) -> str | None:
    return _TIMESTAMP.to_representation(value) if value is not None else None
