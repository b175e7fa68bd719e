"""Reads for the approval inbox, the approval history and the API.

Visibility is decided here, once, for every page and endpoint: a reviewer sees the requests
of the approver groups they belong to, up to their sensitivity clearance, and never the
requests of their own runs; auditors and admins see every request (read-only for auditors).
Each filter is a plain comparison on an indexed column of `PendingAction`, so the same
query plan serves SQLite and PostgreSQL.
"""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from controlplane.errors import NotFound
from controlplane.identity import ADMIN, AGENT, AUDITOR, has_role, user_roles
from runs.models import PendingAction, StepCheckpoint

from .models import ApprovalDecision, ReviewerClearance

User = AbstractBaseUser | AnonymousUser


def pending_for(user: User) -> QuerySet[PendingAction]:
    """Pending requests this user may decide (their approver groups, up to their clearance,
    never their own runs), with the run and requester loaded, soonest due first."""
    if not _may_review(user):
        return PendingAction.objects.none()
    return (
        _decidable_by(user)
        .filter(status=PendingAction.Status.PENDING)
        .select_related("run", "requested_by")
        .order_by("due_at", "pk")
    )


def pending_count_for(user: User) -> int:
    """How many requests wait for this user: one query (shown in the navigation on every page)."""
    if not _may_review(user):
        return 0
    return _decidable_by(user).filter(status=PendingAction.Status.PENDING).count()


def history_for(user: User) -> QuerySet[PendingAction]:
    """Decided, expired and superseded requests this user may see, newest first: reviewers
    those of their groups and those they decided; auditors and admins all of them."""
    return (
        requests_visible_to(user)
        .exclude(status=PendingAction.Status.PENDING)
        .select_related("run", "requested_by")
        .order_by("-created_at", "-pk")
    )


def requests_visible_to(user: User) -> QuerySet[PendingAction]:
    """Every request, in any status, this user may look at."""
    if not user.is_authenticated or AGENT in user_roles(user):
        return PendingAction.objects.none()
    if has_role(user, AUDITOR, ADMIN):
        return PendingAction.objects.all()
    if not _may_review(user):
        return PendingAction.objects.none()
    decided_by_user = ApprovalDecision.objects.filter(pending_action=OuterRef("pk"), reviewer=user)
    return PendingAction.objects.filter(
        Q(pk__in=_decidable_by(user).values("pk")) | Q(Exists(decided_by_user))
    )


def request_for(user: User, pending_action_id: int) -> PendingAction:
    """One request with everything a reviewer needs (run, steps so far, decisions so far);
    NotFound when it does not exist or this user may not see it."""
    request = (
        requests_visible_to(user)
        .select_related("run", "requested_by")
        .prefetch_related(
            Prefetch("run__checkpoints", queryset=StepCheckpoint.objects.order_by("sequence")),
            Prefetch("decisions", queryset=ApprovalDecision.objects.select_related("reviewer")),
        )
        .filter(pk=pending_action_id)
        .first()
    )
    if request is None:
        raise NotFound("No such approval request.")
    return request


def decisions_of(pending_action: PendingAction) -> QuerySet[ApprovalDecision]:
    return pending_action.decisions.select_related("reviewer").order_by("created_at", "pk")


def clearance_of(user: User) -> int:
    """The user's clearance rank (internal when none was recorded)."""
    level = ReviewerClearance.objects.filter(user_id=user.pk).values_list("level", flat=True).first()
    return ReviewerClearance.DEFAULT if level is None else level


def _may_review(user: User) -> bool:
    return user.is_authenticated and AGENT not in user_roles(user)


def _decidable_by(user: User) -> QuerySet[PendingAction]:
    """Requests of the user's groups within their clearance, not of their own runs. The groups
    and clearance are subqueries, so that this stays one round trip."""
    groups = Group.objects.filter(user=user).values("name")
    clearance = Coalesce(
        Subquery(ReviewerClearance.objects.filter(user_id=user.pk).values("level")[:1]),
        Value(int(ReviewerClearance.DEFAULT)),
    )
    requests = PendingAction.objects.filter(sensitivity_rank__lte=clearance).exclude(requested_by_id=user.pk)
    if user.is_superuser:  # a superuser holds the admin role without being in its group
        return requests.filter(Q(approver_group__in=groups) | Q(approver_group=ADMIN))
    return requests.filter(approver_group__in=groups)
