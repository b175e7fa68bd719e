from rest_framework import serializers

from controlplane.api.serializers import StrictInputSerializer

from ..decision_points import POINTS
from ..models import PolicyDecision


class PolicyDecisionSerializer(serializers.ModelSerializer):
    class Meta:
        model = PolicyDecision
        fields = [
            "id",
            "decision_point",
            "input_version",
            "input",
            "input_digest",
            "bundle_name",
            "bundle_version",
            "bundle_digest",
            "engine",
            "allow",
            "require_approval",
            "approvers",
            "quorum",
            "reasons",
            "obligations",
            "failure",
            "latency_us",
            "actor",
            "trace_id",
            "run_id",
            "created_at",
        ]


class InlineBundleSerializer(StrictInputSerializer):
    modules = serializers.DictField(child=serializers.CharField(max_length=256 * 1024), allow_empty=False)
    data = serializers.DictField(required=False, default=dict)


class BundleField(serializers.JSONField):
    """A published bundle as 'name[@version]', or an inline {modules, data}."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if isinstance(value, str):
            return value
        inline = InlineBundleSerializer(data=value)
        inline.is_valid(raise_exception=True)
        return inline.validated_data


class EvaluateInputSerializer(StrictInputSerializer):
    decision_point = serializers.ChoiceField(choices=sorted(POINTS))
    input = serializers.DictField()
    bundle = BundleField(required=False, help_text="Default: the governance bundle.")


class ImpactInputSerializer(StrictInputSerializer):
    bundle = BundleField()
    limit = serializers.IntegerField(min_value=1, max_value=10_000, default=1000)
    decision_point = serializers.ChoiceField(
        choices=sorted(POINTS), required=False, allow_blank=True, default=""
    )


class DecisionResultSerializer(serializers.Serializer):
    allow = serializers.BooleanField()
    require_approval = serializers.BooleanField()
    reasons = serializers.ListField(child=serializers.CharField())
    approvers = serializers.ListField(child=serializers.CharField())
    quorum = serializers.IntegerField(allow_null=True)
    obligations = serializers.DictField()
    failure = serializers.CharField()


class BundleUsedSerializer(serializers.Serializer):
    name = serializers.CharField()
    digest = serializers.CharField()


class EvaluationResultSerializer(DecisionResultSerializer):
    bundle = BundleUsedSerializer(help_text="The bundle that decided.")
