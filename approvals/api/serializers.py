from datetime import datetime, tzinfo

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.api.serializers import StrictInputSerializer
from runs.models import PendingAction, StepCheckpoint

from ..models import ApprovalDecision

# What a list row reads (`values()`): its columns, the run's case id and the requester's name.
LIST_VALUES = (
    *("pk", "run_id", "workflow", "run__case_id", "state", "status", "reasons", "proposed_action"),
    *("action_hash", "risk", "risk_rank", "sensitivity_rank", "approvers", "approver_group", "quorum"),
    *("approvals", "escalations", "requested_by__username", "due_at", "created_at", "decided_at"),
)
RISK_LABELS = dict(PendingAction.Risk.choices)
SENSITIVITY_NAMES = {rank: name for name, rank in PendingAction.SENSITIVITY_RANKS.items()}


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

    def to_representation(self, row: dict) -> dict:
        """The fields above, built from a row of `LIST_VALUES` (no model instances): the list is
        what clients poll, and DRF's generic field-by-field path costs several times more per
        row (the schema still comes from the declared fields; a test holds both to the same
        output)."""
        zone = timezone.get_current_timezone()
        return {
            "id": row["pk"],
            "run": str(row["run_id"]),
            "workflow": row["workflow"],
            "case_id": row["run__case_id"],
            "state": row["state"],
            "status": row["status"],
            "reasons": row["reasons"],
            "proposed_action": row["proposed_action"],
            "action_hash": row["action_hash"],
            "risk": row["risk"],
            "risk_level": RISK_LABELS[row["risk_rank"]],
            "sensitivity": SENSITIVITY_NAMES[row["sensitivity_rank"]],
            "approvers": row["approvers"],
            "approver_group": row["approver_group"],
            "quorum": row["quorum"],
            "approvals": row["approvals"],
            "escalations": row["escalations"],
            "requested_by": row["requested_by__username"] or "",
            "due_at": _timestamp(row["due_at"], zone),
            "created_at": _timestamp(row["created_at"], zone),
            "decided_at": _timestamp(row["decided_at"], zone),
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


def _timestamp(value: datetime | None, zone: tzinfo) -> str | None:
    """As DRF's DateTimeField writes it (ISO 8601 in the current time zone, UTC as "Z")."""
    if value is None:
        return None
    text = value.astimezone(zone).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text
