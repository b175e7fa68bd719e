from rest_framework import serializers

from controlplane.api.serializers import StrictInputSerializer
from controlplane.models import AuditEvent

from ..models import MapBranch, Run, StepCheckpoint


class BudgetSerializer(StrictInputSerializer):
    tokens = serializers.IntegerField(min_value=0, required=False)
    tool_calls = serializers.IntegerField(min_value=0, required=False)
    cost_usd = serializers.FloatField(min_value=0, required=False)


class TaskSubmitSerializer(StrictInputSerializer):
    workflow = serializers.CharField(max_length=200)
    case_id = serializers.CharField(max_length=200, help_text="Business key of the case (ticket, order…).")
    input = serializers.DictField(help_text="The original input; it travels with the run unchanged.")
    channel = serializers.SlugField(
        max_length=50,
        required=False,
        default="",
        help_text="Run the channel's release (default: production).",
    )
    release = serializers.CharField(
        max_length=40, required=False, default="", help_text="Run this exact release."
    )
    sensitivity = serializers.ChoiceField(
        choices=["public", "internal", "confidential", "restricted"], default="internal"
    )
    budget = BudgetSerializer(required=False, help_text="Limits; default: the workflow's limits.")
    deadline = serializers.DateTimeField(
        required=False, help_text="Default: now + the workflow's deadline_s."
    )

    def validate(self, data):
        if data.get("channel") and data.get("release"):
            raise serializers.ValidationError({"release": ["Give a channel or a release, not both."]})
        return data


class TaskAcceptedSerializer(serializers.ModelSerializer):
    run_id = serializers.UUIDField(source="id")

    class Meta:
        model = Run
        fields = ["run_id", "status", "trace_id", "release_id", "channel"]


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = StepCheckpoint
        fields = ["sequence", "state", "output", "details", "started_at", "finished_at"]


class BranchSerializer(serializers.ModelSerializer):
    class Meta:
        model = MapBranch
        fields = [
            "sequence",
            "state",
            "index",
            "item",
            "status",
            "attempts",
            "output",
            "error",
            "details",
            "started_at",
            "finished_at",
        ]


class RunListSerializer(serializers.ModelSerializer):
    requested_by = serializers.CharField(source="requested_by.username")

    class Meta:
        model = Run
        fields = [
            "id",
            "workflow",
            "workflow_version",
            "release_id",
            "channel",
            "case_id",
            "status",
            "current_state",
            "hop_count",
            "trace_id",
            "requested_by",
            "created_at",
            "updated_at",
            "finished_at",
        ]


class RunDetailSerializer(RunListSerializer):
    steps = StepSerializer(source="checkpoints", many=True)
    branches = BranchSerializer(
        source="map_branches", many=True, help_text="Branches of the run's map steps, by position and index."
    )

    class Meta(RunListSerializer.Meta):
        fields = [
            *RunListSerializer.Meta.fields,
            "input",
            "error",
            "budget",
            "spent",
            "deadline",
            "steps",
            "branches",
            "pending_action",
        ]

    pending_action = serializers.SerializerMethodField()

    def get_pending_action(self, run) -> dict | None:
        pending = next((p for p in run.pending_actions.all() if p.status == "pending"), None)
        if pending is None:
            return None
        return {
            "id": pending.pk,
            "state": pending.state,
            "reasons": pending.reasons,
            "proposed_action": pending.proposed_action,
            "approvers": pending.approvers,
            "quorum": pending.quorum,
            "created_at": pending.created_at,
        }


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "seq",
            "created_at",
            "actor",
            "action",
            "object_type",
            "object_id",
            "trace_id",
            "run_id",
            "release_id",
            "payload",
            "payload_digest",
            "prev_hash",
            "hash",
        ]


class CancelInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class RetryInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    repaired_input = serializers.DictField(required=False, help_text="Replaces the run's input (audited).")
