import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.filters import KnownParametersFilterBackend
from controlplane.api.pagination import NewestFirstPagination
from controlplane.api.permissions import ScopedRolePermission, api_key_of
from controlplane.identity import ADMIN, AUDITOR, PLATFORM, REVIEWER
from runs.models import PendingAction

from .. import selectors, services
from .serializers import (
    LIST_VALUES,
    ApprovalDetailSerializer,
    ApprovalListSerializer,
    DecisionInputSerializer,
    DecisionRecordedSerializer,
)

READERS = (REVIEWER, PLATFORM, AUDITOR, ADMIN)
STATUSES = {"", *PendingAction.Status.values}
# Approver groups are role groups: reviewers first, platform and admins by escalation.
DECIDERS = (REVIEWER, PLATFORM, ADMIN)


class ApprovalFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=PendingAction.Status.choices, method="status_in_view")
    workflow = django_filters.CharFilter()
    sensitivity = django_filters.ChoiceFilter(
        field_name="sensitivity_rank",
        choices=[(name, name) for name in PendingAction.SENSITIVITY_RANKS],
        method="filter_rank",
    )
    risk = django_filters.ChoiceFilter(
        field_name="risk_rank", choices=[(r.label, r.label) for r in PendingAction.Risk], method="filter_rank"
    )

    class Meta:
        model = PendingAction
        fields = ["status", "workflow", "sensitivity", "risk"]

    def get_form_class(self):
        # django-filter makes a new form class for each request; these filters never change.
        cls = type(self)
        if "_form_class" not in cls.__dict__:
            cls._form_class = super().get_form_class()
        return cls._form_class

    def status_in_view(self, queryset, name, value):
        # Checked here, applied by the view: `requests_in_view_of` already narrowed to it.
        return queryset

    def filter_rank(self, queryset, name, value: str):  # str: the schema shows names, not ranks
        ranks = (
            PendingAction.SENSITIVITY_RANKS
            if name == "sensitivity_rank"
            else {r.label: r.value for r in PendingAction.Risk}
        )
        return queryset.filter(**{name: ranks[value]})


class InboxPagination(NewestFirstPagination):
    page_size = 25  # an inbox page, as in the browser
    # Requests are numbered as they are created: a unique cursor position on every database
    # (SQLite's clock has millisecond steps, so creation times can tie).
    ordering = ("-pk",)


class ReviewerReadFirst:
    """Reads the caller's groups and clearance before the role check: that one query answers
    both, and the inbox or the decision that follows (see `selectors.reviewer_of`)."""

    def check_permissions(self, request: Request) -> None:
        if request.user.is_authenticated:
            selectors.reviewer_of(request.user)
        super().check_permissions(request)


class ApprovalListView(ReviewerReadFirst, generics.ListAPIView):
    """Approval requests the caller may see, newest first: `?status=pending` is the inbox."""

    pagination_class = InboxPagination
    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "approvals:read"}
    required_roles = {"GET": READERS}
    serializer_class = ApprovalListSerializer
    filterset_class = ApprovalFilter
    filter_backends = [KnownParametersFilterBackend]

    def filter_queryset(self, queryset):
        params = self.request.query_params
        # A valid status alone (how clients poll the inbox) leaves nothing to check or narrow:
        # get_queryset has applied it, and building the filter set costs more than the rows.
        if params.keys() <= {"status", "cursor", "page_size"} and params.get("status", "") in STATUSES:
            return queryset
        return super().filter_queryset(queryset)

    def get_queryset(self):
        status_asked = self.request.query_params.get("status", "")
        # Plain rows, not model instances: a row shows the run's case id and the requester's
        # name; the run's input and the user's other columns stay in the database.
        return selectors.requests_in_view_of(self.request.user, status_asked, LIST_VALUES)


class ApprovalDetailView(generics.RetrieveAPIView):
    permission_classes = [ScopedRolePermission]
    required_scopes = {"GET": "approvals:read"}
    required_roles = {"GET": READERS}
    serializer_class = ApprovalDetailSerializer

    def get_object(self) -> PendingAction:
        return selectors.request_for(self.request.user, self.kwargs["pk"])


class ApprovalDecisionView(ReviewerReadFirst, APIView):
    """Approve or reject: bound to the exact action the request proposes; policy
    `approval.decide` is asked every time (the requester and the agent never decide)."""

    permission_classes = [ScopedRolePermission]
    required_scopes = {"POST": "approvals:decide"}
    required_roles = {"POST": DECIDERS}

    @extend_schema(request=DecisionInputSerializer, responses={201: DecisionRecordedSerializer})
    def post(self, request: Request, pk: int) -> Response:
        serializer = DecisionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        recorded = services.approval_decide(
            pending_action_id=pk,
            user=request.user,
            visible_only=True,
            api_key=api_key_of(request),
            reviewer=selectors.reviewer_of(request.user),
            **serializer.validated_data,
        )
        return Response(DecisionRecordedSerializer(recorded).data, status=status.HTTP_201_CREATED)
