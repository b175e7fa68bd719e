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
    if not user.is_authenticated:
        return PendingAction.objects.none()
    # The group names as literals (not a subquery) let the database walk an inbox index in
    # the order asked for and stop after one page.
    return (
        _decidable_by(user, approver_groups(user))
        .filter(status=PendingAction.Status.PENDING)
        .select_related("run", "requested_by")
        .order_by("due_at", "pk")
    )


def pending_count_for(user: User) -> int:
    """How many requests wait for this user: one query (shown in the navigation on every page)."""
    if not user.is_authenticated:
        return 0
    return _decidable_by(user, _group_names(user)).filter(status=PendingAction.Status.PENDING).count()


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
    decided_by_user = ApprovalDecision.objects.filter(pending_action=OuterRef("pk"), reviewer=user)
    return PendingAction.objects.filter(
        Q(pk__in=_decidable_by(user, _group_names(user)).values("pk")) | Q(Exists(decided_by_user))
    )


def requests_in_view_of(user: User, status: str = "") -> QuerySet[PendingAction]:
    """The caller's view of requests in one status (or all): for reviewers, `pending` is their
    inbox (what they may decide now, as `pending_for`); auditors and admins see every request."""
    if status == PendingAction.Status.PENDING and not has_role(user, AUDITOR, ADMIN):
        return pending_for(user)
    requests = requests_visible_to(user).select_related("run", "requested_by")
    return requests.filter(status=status) if status else requests


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


def approver_groups(user: User) -> list[str]:
    """The groups a user decides for: their Django groups, and admin for a superuser (who holds
    the admin role without being in its group). Cached on the user object for the request."""
    if not hasattr(user, "_baton_approver_groups"):
        names = set(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            names.add(ADMIN)
        user._baton_approver_groups = sorted(names)
    return user._baton_approver_groups


def _group_names(user: User) -> QuerySet | list[str]:
    """The user's group names: the cached list, else a subquery (no round trip of its own)."""
    if hasattr(user, "_baton_approver_groups"):
        return user._baton_approver_groups
    held = Q(user=user.pk) | Q(name=ADMIN) if user.is_superuser else Q(user=user.pk)
    return Group.objects.filter(held).values("name")


def _decidable_by(user: User, groups: QuerySet | list[str]) -> QuerySet[PendingAction]:
    """Requests of these groups within the user's clearance, not of the user's own runs, none
    for an agent. What is known of the user is asked in subqueries: this stays one round trip."""
    clearance = Coalesce(
        Subquery(ReviewerClearance.objects.filter(user_id=user.pk).values("level")[:1]),
        Value(int(ReviewerClearance.DEFAULT)),
    )
    is_agent = Exists(Group.objects.filter(user=user.pk, name=AGENT))  # an agent never decides
    return (
        PendingAction.objects.filter(approver_group__in=groups, sensitivity_rank__lte=clearance)
        .exclude(requested_by_id=user.pk)
        .exclude(is_agent)
    )
