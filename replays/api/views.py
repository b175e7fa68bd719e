import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.filters import KnownParametersFilterBackend
from controlplane.api.permissions import ScopedRolePermission, api_key_of
from controlplane.identity import ADMIN, AUDITOR, PLATFORM
from registry.models import Release
from runs.selectors import runs_visible_to

from .. import selectors, services
from ..models import Replay
from .serializers import (
    ReplayBatchInputSerializer,
    ReplayBatchSerializer,
    ReplayDetailSerializer,
    ReplayInputSerializer,
    ReplaySerializer,
)

READERS = (PLATFORM, AUDITOR, ADMIN)


class RunReplayView(APIView):
    """Replay a finished run: on its own release (deterministic) or on another (what-if).

    Answers 202 with the queued replay; a worker carries it out (poll `GET /replays/{id}`)."""

    permission_classes = [ScopedRolePermission]
    required_scopes = {"POST": "runs:operate"}
    required_roles = {"POST": READERS}

    @extend_schema(request=ReplayInputSerializer, responses={202: ReplaySerializer})
    def post(self, request: Request, pk) -> Response:
        data = _valid(ReplayInputSerializer, request)
        run = get_object_or_404(runs_visible_to(request.user), pk=pk)
        release = get_object_or_404(Release, pk=data["release"]) if data["release"] else None
        replay = services.replay_request(
            run=run, release=release, reason=data["reason"], user=request.user, api_key=api_key_of(request)
        )
        return Response(ReplaySerializer(replay).data, status=status.HTTP_202_ACCEPTED)


class ReplayFilter(django_filters.FilterSet):
    class Meta:
        model = Replay
        fields = ["run", "mode", "outcome", "status", "batch", "release_id"]


class ReplayListView(generics.ListAPIView):
    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "runs:read"}
    required_roles = {"GET": READERS}
    serializer_class = ReplaySerializer
    filterset_class = ReplayFilter
    filter_backends = [KnownParametersFilterBackend]

    def get_queryset(self):
        return selectors.replays()


class ReplayDetailView(generics.RetrieveAPIView):
    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "runs:read"}
    required_roles = {"GET": READERS}
    serializer_class = ReplayDetailSerializer

    def get_queryset(self):
        return selectors.replays()


class ReleaseReplayBatchView(APIView):
    """Replay a release against the last N finished runs of its workflow; the summary is
    attached to the release as its `replay` evaluation. Answers 202 with the queued batch."""

    permission_classes = [ScopedRolePermission]
    required_scopes = {"POST": "runs:operate"}
    required_roles = {"POST": (PLATFORM, ADMIN)}

    @extend_schema(request=ReplayBatchInputSerializer, responses={202: ReplayBatchSerializer})
    def post(self, request: Request, pk: str) -> Response:
        data = _valid(ReplayBatchInputSerializer, request)
        batch = services.replay_batch_request(
            release=get_object_or_404(Release, pk=pk),
            last_n=data["last_n"],
            reason=data["reason"],
            user=request.user,
            api_key=api_key_of(request),
        )
        return Response(ReplayBatchSerializer(batch).data, status=status.HTTP_202_ACCEPTED)


class ReplayBatchDetailView(generics.RetrieveAPIView):
    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "runs:read"}
    required_roles = {"GET": READERS}
    serializer_class = ReplayBatchSerializer

    def get_queryset(self):
        return selectors.batches()


def _valid(serializer_class, request: Request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
