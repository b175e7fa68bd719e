from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.audit import verify_chain
from controlplane.identity import ADMIN, AUDITOR, PLATFORM

from .permissions import ScopedRolePermission


class AuditVerifyView(APIView):
    """Walk the hash chain and report whether it is intact."""

    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "audit:read"}
    required_roles = {"GET": (AUDITOR, ADMIN, PLATFORM)}

    @extend_schema(
        responses=inline_serializer(
            "AuditVerifyResult",
            {
                "ok": serializers.BooleanField(),
                "checked": serializers.IntegerField(),
                "first_bad": serializers.IntegerField(allow_null=True),
                "reason": serializers.CharField(),
            },
        )
    )
    def get(self, request: Request) -> Response:
        return Response(verify_chain().as_dict())
