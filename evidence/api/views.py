from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.permissions import ScopedRolePermission, api_key_of
from controlplane.api.problems import PROBLEM_CONTENT_TYPE
from controlplane.api.schema import documented_problem
from controlplane.api.serializers import StrictInputSerializer
from controlplane.identity import ADMIN, AUDITOR, actor_for

from .. import signing
from ..services import FORMATS, evidence_prepare, evidence_scope, ledger_status


class EvidenceQuery(StrictInputSerializer):
    run = serializers.UUIDField(required=False)
    release = serializers.CharField(required=False, max_length=40)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    format = serializers.ChoiceField(choices=FORMATS, default="json")


class JsonErrorsOnly(BaseContentNegotiation):
    """`format` names the evidence format here, not a renderer: errors are always problem JSON."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class EvidenceView(APIView):
    """A signed evidence package for one run, one release's runs, or the runs started in a window.

    The response streams a ZIP (evidence, public key, signed manifest, whole-file signature);
    verify it with `manage.py evidence_verify` or docs/verify_evidence.py.
    """

    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "audit:read"}
    required_roles = {"GET": (AUDITOR, ADMIN)}
    content_negotiation_class = JsonErrorsOnly

    @extend_schema(
        parameters=[EvidenceQuery],
        responses={
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The package."),
            (404, PROBLEM_CONTENT_TYPE): documented_problem("No such run or release."),
        },
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        query = EvidenceQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        params = query.validated_data
        scope = evidence_scope(
            run_id=str(params.get("run") or ""),
            release_id=params.get("release", ""),
            since=params.get("since"),
            until=params.get("until"),
        )
        package = evidence_prepare(
            scope=scope, format=params["format"], actor=actor_for(request.user, api_key_of(request))
        )
        response = StreamingHttpResponse(package.chunks(), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="baton-evidence-{package.checkpoint.pk}.zip"'
        return response


class EvidenceKeyView(APIView):
    """The deployment's evidence-signing public key and its id, to verify packages against."""

    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "audit:read"}
    required_roles = {"GET": (AUDITOR, ADMIN)}

    @extend_schema(
        responses=inline_serializer(
            "EvidenceKey", {"key_id": serializers.CharField(), "public_key": serializers.CharField()}
        )
    )
    def get(self, request: Request) -> Response:
        return Response({"key_id": signing.key_id(), "public_key": signing.public_key_pem()})


class LedgerStatusView(APIView):
    """The audit chain verified link by link and against every signed checkpoint."""

    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "audit:read"}
    required_roles = {"GET": (AUDITOR, ADMIN)}

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(ledger_status().as_dict())
