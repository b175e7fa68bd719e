from rest_framework import serializers

from controlplane.api.serializers import StrictInputSerializer
from controlplane.models import AuditEvent

from ..models import Run, StepCheckpoint


class TaskSubmitSerializer(StrictInputSerializer):
    workflow = serializers.CharField(max_length=200)
    case_id = serializers.CharField(max_length=200, help_text="Business key of the case (ticket, order…).")
    input = serializers.DictField(help_text="The original input; it travels with the run unchanged.")


class TaskAcceptedSerializer(serializers.ModelSerializer):
    run_id = serializers.UUIDField(source="id")

    class Meta:
        model = Run
        fields = ["run_id", "status", "trace_id", "release_id"]


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = StepCheckpoint
        fields = ["sequence", "state", "output", "started_at", "finished_at"]


class RunListSerializer(serializers.ModelSerializer):
    requested_by = serializers.CharField(source="requested_by.username")

    class Meta:
        model = Run
        fields = [
            "id",
            "workflow",
            "workflow_version",
            "release_id",
            "case_id",
            "status",
            "current_state",
            "trace_id",
            "requested_by",
            "created_at",
            "updated_at",
            "finished_at",
        ]


class RunDetailSerializer(RunListSerializer):
    steps = StepSerializer(source="checkpoints", many=True)

    class Meta(RunListSerializer.Meta):
        fields = [*RunListSerializer.Meta.fields, "input", "error", "steps"]


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
