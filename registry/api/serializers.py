from rest_framework import serializers

from controlplane.api.serializers import StrictInputSerializer

from ..artifact_kinds import SIDE_EFFECTS
from ..models import Agent, Artifact, Channel, ChannelChange, Release, ReleaseEvaluation, ReleaseSignOff, Team


class TeamSerializer(serializers.ModelSerializer):
    members = serializers.SlugRelatedField(slug_field="username", many=True, read_only=True)

    class Meta:
        model = Team
        fields = ["slug", "name", "support_queue", "members", "created_at"]


class TeamInputSerializer(StrictInputSerializer):
    slug = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    support_queue = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class AllowedToolSerializer(StrictInputSerializer):
    tool = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=SIDE_EFFECTS)


class AgentSerializer(serializers.ModelSerializer):
    owner_team = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    service_identity = serializers.CharField(source="service_user.username", read_only=True)

    class Meta:
        model = Agent
        fields = [
            "slug",
            "display_name",
            "owner_team",
            "purpose",
            "runbook_url",
            "slo_p95_latency_ms",
            "slo_success_rate",
            "data_classification",
            "allowed_tools",
            "status",
            "service_identity",
            "retired_at",
            "retirement_reason",
            "created_at",
            "updated_at",
        ]


class AgentInputSerializer(StrictInputSerializer):
    """Register (all fields) or edit (partial, without slug) an agent."""

    slug = serializers.SlugField(max_length=100)
    display_name = serializers.CharField(max_length=200)
    owner_team = serializers.SlugRelatedField(
        slug_field="slug", queryset=Team.objects.all(), required=False, allow_null=True
    )
    purpose = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    runbook_url = serializers.URLField(required=False, allow_blank=True, max_length=200)
    slo_p95_latency_ms = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=Agent.MAX_SLO_P95_LATENCY_MS,
    )
    slo_success_rate = serializers.DecimalField(
        max_digits=5, decimal_places=4, min_value=0, max_value=1, required=False, allow_null=True
    )
    data_classification = serializers.ChoiceField(choices=Agent.Classification.choices, required=False)
    allowed_tools = AllowedToolSerializer(many=True, required=False)


class LifecycleInputSerializer(StrictInputSerializer):
    status = serializers.ChoiceField(choices=Agent.Status.choices)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class AgentKeyInputSerializer(StrictInputSerializer):
    scopes = serializers.ListField(child=serializers.CharField(max_length=50), required=False)
    expires_days = serializers.IntegerField(required=False, min_value=1, max_value=3650)


class IssuedKeySerializer(serializers.Serializer):
    """A key as issued: the secret is shown this once."""

    key = serializers.CharField(source="secret")
    prefix = serializers.CharField(source="api_key.prefix")
    scopes = serializers.ListField(child=serializers.CharField(), source="api_key.scopes")
    expires_at = serializers.DateTimeField(source="api_key.expires_at", allow_null=True)


class ArtifactSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", read_only=True)

    class Meta:
        model = Artifact
        fields = ["kind", "name", "version", "digest", "content", "author", "created_at"]


class ArtifactSummarySerializer(ArtifactSerializer):
    class Meta(ArtifactSerializer.Meta):
        fields = ["kind", "name", "version", "digest", "author", "created_at"]


class ArtifactInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=100)
    content = serializers.JSONField(
        help_text="The artifact; for a workflow, a mapping or YAML/JSON source text."
    )


class ReleaseSummarySerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", read_only=True)

    class Meta:
        model = Release
        fields = ["id", "workflow", "digest", "notes", "author", "created_at"]


class EvaluationSerializer(serializers.ModelSerializer):
    recorded_by = serializers.CharField(source="recorded_by.username", read_only=True)

    class Meta:
        model = ReleaseEvaluation
        fields = ["suite", "score", "details", "recorded_by", "created_at"]


class SignOffSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = ReleaseSignOff
        fields = ["user", "comment", "created_at"]


class ReleaseSerializer(ReleaseSummarySerializer):
    evaluations = EvaluationSerializer(many=True, read_only=True)
    signoffs = SignOffSerializer(many=True, read_only=True)
    gate_problems = serializers.SerializerMethodField()

    class Meta(ReleaseSummarySerializer.Meta):
        fields = [
            *ReleaseSummarySerializer.Meta.fields,
            "manifest",
            "evaluations",
            "signoffs",
            "gate_problems",
        ]

    def get_gate_problems(self, release: Release) -> list[str]:
        return self.context["gate_problems"]


class ReleaseInputSerializer(StrictInputSerializer):
    workflow = serializers.CharField(max_length=120, help_text="name or name@version")
    policy_bundle = serializers.CharField(max_length=120)
    agents = serializers.DictField(
        child=serializers.DictField(child=serializers.CharField(max_length=120)), required=False, default=dict
    )
    pins = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField(min_value=1)), required=False, default=dict
    )
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class EvaluationInputSerializer(StrictInputSerializer):
    suite = serializers.CharField(max_length=200)
    score = serializers.DecimalField(max_digits=6, decimal_places=4, min_value=0, max_value=1)
    details = serializers.DictField(required=False, default=dict)


class SignOffInputSerializer(StrictInputSerializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class PromoteInputSerializer(StrictInputSerializer):
    channel = serializers.SlugField(max_length=50)
    mode = serializers.ChoiceField(choices=Channel.Mode.choices, default=Channel.Mode.FULL)
    canary_percent = serializers.IntegerField(required=False, allow_null=True, default=None)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class RollbackInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    from_release = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=40,
        help_text="The release you expect on the channel; a stale rollback is refused with 409.",
    )


class ChannelSerializer(serializers.ModelSerializer):
    class Meta:
        model = Channel
        fields = [
            "workflow",
            "name",
            "requires_gates",
            "release",
            "baseline",
            "mode",
            "canary_percent",
            "updated_at",
        ]


class ChannelChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = ChannelChange
        fields = ["action", "release", "baseline", "mode", "canary_percent", "actor", "reason", "created_at"]


class ArtifactChangeSerializer(serializers.Serializer):
    kind = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    old_version = serializers.IntegerField(allow_null=True)
    new_version = serializers.IntegerField(allow_null=True)
    text_diff = serializers.ListField(child=serializers.CharField())
