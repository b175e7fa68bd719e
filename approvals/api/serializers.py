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


class ApprovalDetailSerializer(ApprovalListSerializer):
    """Everything a reviewer needs to decide: the original input, what the agent did so far,
    why it stopped, the exact action proposed, and the decisions so far."""

    original_input = serializers.JSONField(source="run.input")
    run_status = serializers.CharField(source="run.status")
    release_id = serializers.CharField(source="run.release_id")
    trace_id = serializers.CharField(source="run.trace_id")
    steps = StepSoFarSerializer(source="run.checkpoints", many=True)
    decisions = DecisionSerializer(many=True)

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
