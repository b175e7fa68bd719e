from rest_framework import serializers

from controlplane.api.serializers import StrictInputSerializer

from ..models import Replay, ReplayBatch


class ReplayInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(max_length=2000, help_text="Why: it is audited.")
    release = serializers.CharField(
        max_length=40,
        required=False,
        default="",
        help_text="A release of the run's workflow (what-if); default: its own release (deterministic).",
    )


class ReplayBatchInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(max_length=2000, help_text="Why: it is audited.")
    last_n = serializers.IntegerField(min_value=1, help_text="How many of the workflow's last finished runs.")


class ReplaySerializer(serializers.ModelSerializer):
    requested_by = serializers.CharField(
        source="requested_by.username", default=None, allow_null=True, help_text="None for a shadow replay."
    )

    class Meta:
        model = Replay
        fields = [
            "id",
            "run",
            "release_id",
            "mode",
            "reason",
            "shadow",
            "batch",
            "status",
            "outcome",
            "first_difference",
            "error",
            "requested_by",
            "created_at",
            "finished_at",
        ]


class ReplayDetailSerializer(ReplaySerializer):
    class Meta(ReplaySerializer.Meta):
        fields = [*ReplaySerializer.Meta.fields, "report"]


class ReplayBatchSerializer(serializers.ModelSerializer):
    requested_by = serializers.CharField(source="requested_by.username")
    evaluation = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = ReplayBatch
        fields = [
            "id",
            "release",
            "workflow",
            "last_n",
            "reason",
            "status",
            "total",
            "done",
            "summary",
            "evaluation",
            "error",
            "requested_by",
            "created_at",
            "finished_at",
        ]
