from datetime import timedelta

import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.filters import KnownParametersFilterBackend
from controlplane.api.permissions import ScopedRolePermission, api_key_of
from controlplane.identity import ADMIN, PLATFORM, actor_for

from .. import selectors
from ..models import Agent, Artifact, Channel, Release
from ..services import agents as agent_services
from ..services import releases as release_services
from ..services.artifacts import artifact_publish
from . import serializers as s

_WRITERS = (PLATFORM, ADMIN)


class RegistryPermissions:
    """Everyone signed in reads the registry; only platform (and admin) users change it."""

    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "registry:read", "POST": "registry:write", "PATCH": "registry:write"}
    required_roles = {"POST": _WRITERS, "PATCH": _WRITERS}

    def actor(self):
        return actor_for(self.request.user, api_key_of(self.request))


def _created(instance_data: dict, created: bool) -> Response:
    return Response(instance_data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


def _valid(serializer_class, request: Request, **kwargs) -> dict:
    serializer = serializer_class(data=request.data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class TeamListView(RegistryPermissions, generics.ListAPIView):
    serializer_class = s.TeamSerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.teams_list()

    @extend_schema(request=s.TeamInputSerializer, responses={201: s.TeamSerializer})
    def post(self, request: Request) -> Response:
        team = agent_services.team_create(actor=self.actor(), **_valid(s.TeamInputSerializer, request))
        return Response(s.TeamSerializer(team).data, status=status.HTTP_201_CREATED)


class AgentFilter(django_filters.FilterSet):
    owner = django_filters.CharFilter(field_name="owner_team__slug")

    class Meta:
        model = Agent
        fields = ["owner", "status", "data_classification"]


class AgentListView(RegistryPermissions, generics.ListAPIView):
    serializer_class = s.AgentSerializer
    filterset_class = AgentFilter
    filter_backends = [KnownParametersFilterBackend]

    def get_queryset(self):
        return selectors.agents_list().select_related("service_user")

    @extend_schema(request=s.AgentInputSerializer, responses={201: s.AgentSerializer})
    def post(self, request: Request) -> Response:
        data = _valid(s.AgentInputSerializer, request)
        agent = agent_services.agent_register(actor=self.actor(), **data)
        return Response(s.AgentSerializer(agent).data, status=status.HTTP_201_CREATED)


class AgentDetailView(RegistryPermissions, generics.RetrieveAPIView):
    serializer_class = s.AgentSerializer
    lookup_field = "slug"

    def get_queryset(self):
        return selectors.agents_list().select_related("service_user")

    @extend_schema(request=s.AgentInputSerializer, responses={200: s.AgentSerializer})
    def patch(self, request: Request, slug: str) -> Response:
        data = _valid(s.AgentInputSerializer, request, partial=True)
        if "slug" in data:
            raise ValidationError({"slug": ["An agent's slug cannot change."]})
        agent = agent_services.agent_update(agent=self.get_object(), changes=data, actor=self.actor())
        return Response(s.AgentSerializer(agent).data)


class AgentLifecycleView(RegistryPermissions, APIView):
    @extend_schema(request=s.LifecycleInputSerializer, responses={200: s.AgentSerializer})
    def post(self, request: Request, slug: str) -> Response:
        data = _valid(s.LifecycleInputSerializer, request)
        agent = agent_services.agent_transition(
            agent=get_object_or_404(Agent, slug=slug),
            to_status=data["status"],
            reason=data["reason"],
            actor=self.actor(),
        )
        return Response(s.AgentSerializer(agent).data)


class AgentKeyView(RegistryPermissions, APIView):
    """Issue the agent's own API key; shown once."""

    @extend_schema(request=s.AgentKeyInputSerializer, responses={201: s.IssuedKeySerializer})
    def post(self, request: Request, slug: str) -> Response:
        data = _valid(s.AgentKeyInputSerializer, request)
        issued = agent_services.agent_issue_key(
            agent=get_object_or_404(Agent, slug=slug),
            actor=self.actor(),
            scopes=data.get("scopes", agent_services.AGENT_KEY_SCOPES),
            expires_in=timedelta(days=data["expires_days"]) if "expires_days" in data else None,
        )
        return Response(s.IssuedKeySerializer(issued).data, status=status.HTTP_201_CREATED)


class ArtifactListView(RegistryPermissions, generics.ListAPIView):
    """The newest version of each artifact of a kind; POST publishes a version."""

    serializer_class = s.ArtifactSummarySerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.artifacts_latest(kind=self._kind())

    def _kind(self) -> str:
        kind = self.kwargs["kind"]
        if kind not in Artifact.Kind.values:
            raise NotFound(f"No artifact kind {kind!r}; kinds: {', '.join(Artifact.Kind.values)}.")
        return kind

    @extend_schema(
        request=s.ArtifactInputSerializer, responses={201: s.ArtifactSerializer, 200: s.ArtifactSerializer}
    )
    def post(self, request: Request, kind: str) -> Response:
        data = _valid(s.ArtifactInputSerializer, request)
        publication = artifact_publish(
            kind=self._kind(),
            name=data["name"],
            content=data["content"],
            author=request.user,
            actor=self.actor(),
        )
        return _created(s.ArtifactSerializer(publication.artifact).data, publication.created)


class ArtifactVersionsView(RegistryPermissions, generics.ListAPIView):
    serializer_class = s.ArtifactSummarySerializer

    @extend_schema(operation_id="v1_artifacts_versions_list")
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        kind, name = self.kwargs["kind"], self.kwargs["name"]
        versions = selectors.artifact_versions(kind, name)
        if not versions.exists():  # a misspelt name is not an artifact without versions
            raise NotFound(f"No {kind} artifact {name!r}.")
        return versions


class ArtifactVersionView(RegistryPermissions, generics.RetrieveAPIView):
    serializer_class = s.ArtifactSerializer

    def get_object(self):
        return get_object_or_404(
            selectors.artifact_versions(self.kwargs["kind"], self.kwargs["name"]),
            version=self.kwargs["version"],
        )


class ReleaseListView(RegistryPermissions, generics.ListAPIView):
    serializer_class = s.ReleaseSummarySerializer
    filter_backends = [KnownParametersFilterBackend]
    filterset_fields = ["workflow"]

    def get_queryset(self):
        return selectors.releases_list()

    @extend_schema(
        request=s.ReleaseInputSerializer, responses={201: s.ReleaseSerializer, 200: s.ReleaseSerializer}
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.ReleaseInputSerializer, request)
        notes = data.pop("notes")
        creation = release_services.release_create(
            spec=data, notes=notes, author=request.user, actor=self.actor()
        )
        return _created(_release_data(creation.release.pk), creation.created)


def _release_data(release_id: str) -> dict:
    release = selectors.release_detail(release_id)
    gate_problems = release_services.promotion_gate_problems(release)
    return s.ReleaseSerializer(release, context={"gate_problems": gate_problems}).data


class ReleaseDetailView(RegistryPermissions, APIView):
    @extend_schema(responses=s.ReleaseSerializer)
    def get(self, request: Request, pk: str) -> Response:
        get_object_or_404(Release, pk=pk)
        return Response(_release_data(pk))


class ReleaseEvaluationView(RegistryPermissions, APIView):
    @extend_schema(request=s.EvaluationInputSerializer, responses={201: s.EvaluationSerializer})
    def post(self, request: Request, pk: str) -> Response:
        data = _valid(s.EvaluationInputSerializer, request)
        evaluation = release_services.release_record_evaluation(
            release=get_object_or_404(Release, pk=pk), recorded_by=request.user, actor=self.actor(), **data
        )
        return Response(s.EvaluationSerializer(evaluation).data, status=status.HTTP_201_CREATED)


class ReleaseSignOffView(RegistryPermissions, APIView):
    @extend_schema(
        request=s.SignOffInputSerializer, responses={201: s.SignOffSerializer, 200: s.SignOffSerializer}
    )
    def post(self, request: Request, pk: str) -> Response:
        data = _valid(s.SignOffInputSerializer, request)
        signed = release_services.release_sign_off(
            release=get_object_or_404(Release, pk=pk),
            user=request.user,
            actor=self.actor(),
            comment=data["comment"],
        )
        return _created(s.SignOffSerializer(signed.signoff).data, signed.created)


class ReleasePromoteView(RegistryPermissions, APIView):
    @extend_schema(request=s.PromoteInputSerializer, responses={200: s.ChannelSerializer})
    def post(self, request: Request, pk: str) -> Response:
        data = _valid(s.PromoteInputSerializer, request)
        channel = release_services.release_promote(
            release=get_object_or_404(Release, pk=pk), actor=self.actor(), **data
        )
        return Response(s.ChannelSerializer(channel).data)


class ReleaseDiffView(RegistryPermissions, APIView):
    @extend_schema(
        parameters=[OpenApiParameter("against", str, required=True, description="The older release id.")],
        responses=s.ArtifactChangeSerializer(many=True),
    )
    def get(self, request: Request, pk: str) -> Response:
        against = request.query_params.get("against", "")
        if not against:
            raise ValidationError({"against": ["The id of the release to compare with is required."]})
        changes = selectors.release_diff(
            get_object_or_404(Release, pk=against), get_object_or_404(Release, pk=pk)
        )
        return Response(s.ArtifactChangeSerializer(changes, many=True).data)


class ChannelListView(RegistryPermissions, generics.ListAPIView):
    serializer_class = s.ChannelSerializer
    pagination_class = None
    filter_backends = [KnownParametersFilterBackend]
    filterset_fields = ["workflow", "name"]

    def get_queryset(self):
        return selectors.channels_list()


class ChannelRollbackView(RegistryPermissions, APIView):
    @extend_schema(request=s.RollbackInputSerializer, responses={200: s.ChannelSerializer})
    def post(self, request: Request, workflow: str, name: str) -> Response:
        data = _valid(s.RollbackInputSerializer, request)
        channel = get_object_or_404(Channel, workflow=workflow, name=name)
        channel = release_services.channel_rollback(channel=channel, actor=self.actor(), **data)
        return Response(s.ChannelSerializer(channel).data)
