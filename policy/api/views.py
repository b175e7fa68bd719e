import django_filters
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.filters import BooleanFilter, KnownParametersFilterBackend
from controlplane.api.permissions import ScopedRolePermission
from controlplane.api.schema import CHANGES_NOTHING
from controlplane.errors import InvalidInput
from controlplane.identity import ADMIN, AUDITOR, PLATFORM

from .. import selectors
from ..bundles import PolicyBundle, bundle_by_ref, governance_bundle
from ..decision_points import POINTS
from ..engines import EngineError
from ..engines.embedded import EmbeddedEngine
from ..impact import impact_analysis
from ..models import PolicyDecision
from ..services import policy_evaluate
from . import serializers as s


class PolicyPermissions:
    """Decisions show inputs of other people's work: operators and auditors only."""

    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "policy:read", "POST": "policy:read"}
    required_roles = {"GET": (PLATFORM, AUDITOR, ADMIN), "POST": (PLATFORM, AUDITOR, ADMIN)}


class DecisionFilter(django_filters.FilterSet):
    decision_point = django_filters.ChoiceFilter(choices=[(point, point) for point in sorted(POINTS)])
    allow = BooleanFilter()
    require_approval = BooleanFilter()

    class Meta:
        model = PolicyDecision
        fields = [
            "decision_point",
            "allow",
            "require_approval",
            "run_id",
            "bundle_digest",
            "failure",
            "engine",
        ]


class DecisionListView(PolicyPermissions, generics.ListAPIView):
    serializer_class = s.PolicyDecisionSerializer
    filterset_class = DecisionFilter
    filter_backends = [KnownParametersFilterBackend]

    def get_queryset(self):
        return selectors.decisions_list()


class DecisionDetailView(PolicyPermissions, generics.RetrieveAPIView):
    serializer_class = s.PolicyDecisionSerializer
    queryset = PolicyDecision.objects.all()


def _bundle(value: str | dict | None) -> PolicyBundle:
    if value is None:
        return governance_bundle()
    if isinstance(value, str):
        bundle = bundle_by_ref(value)
        if bundle is None:
            raise InvalidInput(
                f"No published policy bundle {value!r}.", errors={"bundle": ["Unknown bundle."]}
            )
        return bundle
    bundle = PolicyBundle.from_content("candidate", value)
    try:
        EmbeddedEngine().compile(bundle)
    except EngineError as error:
        raise InvalidInput(str(error)[:1000], errors={"bundle": [str(error)[:1000]]}) from error
    return bundle


class EvaluateView(PolicyPermissions, APIView):
    """Dry run: evaluate an input against a bundle; nothing is recorded."""

    @extend_schema(
        request=s.EvaluateInputSerializer, responses=s.EvaluationResultSerializer, extensions=CHANGES_NOTHING
    )
    def post(self, request: Request) -> Response:
        serializer = s.EvaluateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        bundle = _bundle(data.get("bundle"))
        decision = policy_evaluate(data["decision_point"], data["input"], bundle=bundle)
        return Response({**decision.as_dict(), "bundle": {"name": bundle.name, "digest": bundle.digest}})


class ImpactView(PolicyPermissions, APIView):
    """What a candidate bundle would decide differently among the recent decisions."""

    @extend_schema(
        request=s.ImpactInputSerializer,
        extensions=CHANGES_NOTHING,
        responses=inline_serializer(
            "ImpactReport",
            {
                "evaluated": serializers.IntegerField(),
                "summary": serializers.DictField(),
                "changes": serializers.ListField(child=serializers.DictField()),
            },
        ),
    )
    def post(self, request: Request) -> Response:
        serializer = s.ImpactInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        report = impact_analysis(_bundle(data["bundle"]), limit=data["limit"], point=data["decision_point"])
        return Response(
            {
                "evaluated": report.evaluated,
                "summary": report.summary,
                "changes": [
                    {
                        "decision_id": c.decision.pk,
                        "decision_point": c.decision.decision_point,
                        "change": c.change,
                        "recorded": {
                            "allow": c.decision.allow,
                            "reasons": c.decision.reasons,
                            "require_approval": c.decision.require_approval,
                        },
                        "candidate": c.candidate.as_dict(),
                    }
                    for c in report.changes
                ],
            }
        )
