import django_filters
from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.filters import KnownParametersFilterBackend
from controlplane.api.permissions import ScopedRolePermission, api_key_of
from controlplane.identity import ADMIN, PLATFORM, actor_for

from .. import selectors, services
from ..models import MapBranch, Run, StepCheckpoint
from .serializers import (
    AuditEventSerializer,
    CancelInputSerializer,
    RetryInputSerializer,
    RunDetailSerializer,
    RunListSerializer,
    TaskAcceptedSerializer,
    TaskSubmitSerializer,
)

_IDEMPOTENCY_KEY_MAX = 200


class TaskSubmitView(APIView):
    permission_classes = [ScopedRolePermission]
    required_scopes = {"POST": "tasks:write"}

    @extend_schema(
        request=TaskSubmitSerializer,
        responses={201: TaskAcceptedSerializer, 200: TaskAcceptedSerializer},
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Repeat a submission safely: same key and body → same run.",
            )
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = TaskSubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        submission = services.task_submit(
            requester=request.user,
            actor=actor_for(request.user, api_key_of(request)),
            idempotency_key=_idempotency_key(request),
            **serializer.validated_data,
        )
        return Response(
            TaskAcceptedSerializer(submission.run).data,
            status=status.HTTP_201_CREATED if submission.created else status.HTTP_200_OK,
            headers={"Location": f"/api/v1/runs/{submission.run.pk}"},
        )


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > _IDEMPOTENCY_KEY_MAX or not key.isprintable() or not key.isascii():
        raise ParseError(
            f"Idempotency-Key must be at most {_IDEMPOTENCY_KEY_MAX} printable ASCII characters."
        )
    return key


class RunFilter(django_filters.FilterSet):
    class Meta:
        model = Run
        fields = ["status", "workflow", "case_id"]


class RunListView(generics.ListAPIView):
    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "runs:read"}
    serializer_class = RunListSerializer
    filterset_class = RunFilter
    filter_backends = [KnownParametersFilterBackend]

    def get_queryset(self):
        return selectors.runs_visible_to(self.request.user)


def _detailed_runs_visible_to(user):
    """What RunDetailSerializer reads, for runs the user may see."""
    return selectors.runs_visible_to(user).prefetch_related(
        Prefetch("checkpoints", queryset=StepCheckpoint.objects.order_by("sequence")),
        Prefetch("map_branches", queryset=MapBranch.objects.order_by("sequence", "index")),
        "pending_actions",
    )


class RunDetailView(generics.RetrieveAPIView):
    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "runs:read"}
    serializer_class = RunDetailSerializer

    def get_queryset(self):
        return _detailed_runs_visible_to(self.request.user)


class RunEventsView(generics.ListAPIView):
    """The run's audit events in chain order."""

    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "runs:read"}
    serializer_class = AuditEventSerializer
    pagination_class = None

    def get_queryset(self):
        run = generics.get_object_or_404(selectors.runs_visible_to(self.request.user), pk=self.kwargs["pk"])
        return selectors.run_events(run)


class RunOperationView(APIView):
    """Operator actions: platform and admin users with the runs:operate scope."""

    permission_classes = [ScopedRolePermission]
    required_scopes = {"POST": "runs:operate"}
    required_roles = {"POST": (PLATFORM, ADMIN)}

    def _run(self, pk) -> Run:
        return generics.get_object_or_404(selectors.runs_visible_to(self.request.user), pk=pk)

    def _answer(self, run: Run) -> Response:
        """The run as GET /runs/{id} shows it after the operation (the service's instance holds
        the database's clock as expressions, not times)."""
        return Response(RunDetailSerializer(_detailed_runs_visible_to(self.request.user).get(pk=run.pk)).data)


class RunCancelView(RunOperationView):
    @extend_schema(request=CancelInputSerializer, responses=RunDetailSerializer)
    def post(self, request: Request, pk) -> Response:
        serializer = CancelInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = services.run_cancel(
            run=self._run(pk), actor=actor_for(request.user, api_key_of(request)), **serializer.validated_data
        )
        return self._answer(run)


class RunRetryView(RunOperationView):
    @extend_schema(request=RetryInputSerializer, responses=RunDetailSerializer)
    def post(self, request: Request, pk) -> Response:
        serializer = RetryInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = services.run_retry(
            run=self._run(pk), actor=actor_for(request.user, api_key_of(request)), **serializer.validated_data
        )
        return self._answer(run)
