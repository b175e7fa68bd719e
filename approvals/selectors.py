"""Reads for the approval inbox, the approval history and the API.

Visibility is decided here, once, for every page and endpoint: a reviewer sees the requests
of the approver groups they belong to, up to their sensitivity clearance, and never the
requests of their own runs; auditors and admins see every request (read-only for auditors).
Each filter is a plain comparison on an indexed column of `PendingAction`, so the same
query plan serves SQLite and PostgreSQL.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, wraps

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.db.models import Exists, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from controlplane.compiled import compiled_once
from controlplane.errors import NotFound
from controlplane.identity import (
    ADMIN,
    AGENT,
    AUDITOR,
    credential_in,
    has_role,
    remember_roles,
    user_roles,
)
from controlplane.models import ApiKey, AuditEvent
from registry.models import Release
from runs.models import PendingAction, Run, StepCheckpoint
from runs.workflows import BUILTIN_WORKFLOWS

from .models import ApprovalDecision, ReviewerClearance

User = AbstractBaseUser | AnonymousUser
# The navigation shows "999+" beyond this: counting stops there, so a long backlog costs no more.
PENDING_COUNT_CAP = 999
# How long a process trusts the workflows it read for the inbox's filter. Releases are never
# deleted, so the list only grows: a new workflow shows up in the filter within this time.
WORKFLOWS_FRESH_SECONDS = 60
_workflows_read: tuple[float, list[str]] = (float("-inf"), [])


def built_once(build: Callable[..., QuerySet]) -> Callable[..., QuerySet]:
    """`build` remembered per process for each set of its arguments, for the querysets asked for
    again and again (a reviewer's inbox every 10 seconds): here building one costs more than
    running it. It must depend on its (hashable) arguments alone, and read nothing in Python
    that changes (times are the database's). Callers get a copy to run or narrow."""
    remembered = lru_cache(maxsize=1024)(build)

    @wraps(build)
    def copy(*args) -> QuerySet:
        return remembered(*args).all()

    return copy


@dataclass(frozen=True)
class Reviewer:
    """What decides which requests a user may see and decide: their groups and clearance."""

    groups: list[str]
    clearance: int
    is_agent: bool


def reviewer_of(user: User) -> Reviewer:
    """The user's groups and clearance (see `reviewer_read`), cached on the user object for the
    request. Read first, they also answer the request's role checks: `identity.user_roles`
    finds the roles in its cache on the user instead of reading them again."""
    if not hasattr(user, "_baton_reviewer"):
        user._baton_reviewer = reviewer_read(user)
        remember_roles(user, user._baton_reviewer.groups)
    return user._baton_reviewer


def reviewer_read(user: User) -> Reviewer:
    """The user's groups (admin too for a superuser, who holds the admin role without being in
    its group) and clearance, read now in one query."""
    rows = _groups_and_clearance(user.pk)
    names = {name for name, _ in rows if name}
    level = rows[0][1] if rows else None
    if user.is_superuser:
        names.add(ADMIN)
    return Reviewer(
        groups=sorted(names),
        clearance=ReviewerClearance.DEFAULT if level is None else level,
        is_agent=AGENT in names,
    )


@compiled_once
def _groups_and_clearance(user_id: int) -> QuerySet:
    # One row per group (one with no name when there is none), the clearance on each.
    return get_user_model().objects.filter(pk=user_id).values_list("groups__name", "clearance__level")


def pending_for(user: User) -> QuerySet[PendingAction]:
    """Pending requests this user may decide (their approver groups, up to their clearance,
    never their own runs), with the run and requester loaded, soonest due first."""
    if not user.is_authenticated:
        return PendingAction.objects.none()
    reviewer = reviewer_of(user)
    return pending_decidable_by(user.pk, tuple(reviewer.groups), reviewer.clearance, reviewer.is_agent)


def pending_decidable_by(
    user_id: int, groups: tuple[str, ...], clearance: int, is_agent: bool
) -> QuerySet[PendingAction]:
    """`pending_for` from what is known of the user, every input an argument."""
    if is_agent:
        return PendingAction.objects.none()
    # What is known of the user as literals (not subqueries) lets the database walk an inbox
    # index in the order asked for and stop after one page.
    decidable = _decidable(user_id, groups, clearance)
    return (
        PendingAction.objects.filter(decidable, status=PendingAction.Status.PENDING)
        .select_related("run", "requested_by")
        .order_by("due_at", "pk")
    )


def pending_count_for(user: User) -> int:
    """How many requests wait for this user, counted up to PENDING_COUNT_CAP + 1: one query
    (shown in the navigation on every page) that reads the open-requests index alone."""
    if not user.is_authenticated:
        return 0
    cached = getattr(user, "_baton_reviewer", None)
    if cached is not None:
        if cached.is_agent:
            return 0
        decidable = _decidable(user.pk, cached.groups, cached.clearance)
    else:  # what is known of the user is asked in subqueries: this stays one round trip
        decidable = _decidable(user.pk, _group_names(user), _clearance_subquery(user)) & ~Q(_is_agent(user))
    waiting = PendingAction.objects.filter(decidable, status=PendingAction.Status.PENDING)
    return waiting.order_by()[: PENDING_COUNT_CAP + 1].count()


def pending_count_of(pending: QuerySet[PendingAction]) -> "CountOf":
    """`pending_count_for` as a scalar subquery of a user's `pending_for`: the inbox reads the
    navigation's count with its rows, in one statement."""
    return CountOf(pending.order_by()[: PENDING_COUNT_CAP + 1].values("pk"))


class CountOf(Subquery):
    """The number of rows of a queryset (sliced or not), as a scalar subquery."""

    template = "(SELECT COUNT(*) FROM (%(subquery)s) counted)"
    output_field = IntegerField()


def filterable_workflows() -> list[str]:
    """The workflows that can ask for approvals, for the inbox's filter: the built-in ones and
    those released (a small table, not the requests), read at most once a minute per process."""
    global _workflows_read
    read_at, names = _workflows_read
    if time.monotonic() - read_at > WORKFLOWS_FRESH_SECONDS:
        released = Release.objects.values_list("workflow", flat=True).distinct()
        names = sorted({*BUILTIN_WORKFLOWS, *released})
        _workflows_read = (time.monotonic(), names)
    return names


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
    # Conditions on the row itself (no `pk IN (...)` of every decidable request): looking up one
    # request, or one page of them, costs the same however many wait.
    decidable = _decidable(user.pk, _group_names(user), _clearance(user))
    return PendingAction.objects.filter(decidable | Q(Exists(decided_by_user)))


def request_visible_to(user: User, reviewer: Reviewer, request: PendingAction, *, decided_it: bool) -> bool:
    """`requests_visible_to`'s rule asked of one request already read, with `reviewer` (the
    user's groups and clearance) and whether the user decided it: a decision reads its request
    by primary key, and the filter would cost more to build than the row to read."""
    if not user.is_authenticated or AGENT in user_roles(user):
        return False
    if has_role(user, AUDITOR, ADMIN) or decided_it:
        return True
    return (
        request.approver_group in reviewer.groups
        and request.sensitivity_rank <= reviewer.clearance
        and request.requested_by_id != user.pk
    )


def requests_in_view_of(user: User, status: str = "", columns: tuple[str, ...] = ()) -> QuerySet:
    """The caller's view of requests in one status (or all), as rows of `columns` if given: for
    reviewers, `pending` is their inbox (what they may decide now, as `pending_for`); auditors
    and admins see every request."""
    if status == PendingAction.Status.PENDING and not has_role(user, AUDITOR, ADMIN):
        if not user.is_authenticated:
            return PendingAction.objects.none()
        reviewer = reviewer_of(user)
        return _pending_rows(user.pk, tuple(reviewer.groups), reviewer.clearance, reviewer.is_agent, columns)
    requests = requests_visible_to(user).select_related("run", "requested_by")
    requests = requests.filter(status=status) if status else requests
    return requests.values(*columns) if columns else requests


@built_once
def _pending_rows(
    user_id: int, groups: tuple[str, ...], clearance: int, is_agent: bool, columns: tuple[str, ...]
) -> QuerySet:
    requests = pending_decidable_by(user_id, groups, clearance, is_agent)
    return requests.values(*columns) if columns else requests


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


def agent_key_issuer_id(run: Run) -> int | None:
    """The person who issued the agent key a run was asked for with (its `run.created` event
    names the key), if it was: they asked through the agent."""
    created = AuditEvent.objects.filter(
        object_type=Run._meta.label_lower, object_id=str(run.pk), action="run.created"
    )
    prefix = credential_in(created.values_list("actor", flat=True).first() or "")
    if not prefix:
        return None
    return ApiKey.objects.filter(prefix=prefix).values_list("issued_by_id", flat=True).first()


def decisions_of(pending_action: PendingAction) -> QuerySet[ApprovalDecision]:
    return pending_action.decisions.select_related("reviewer").order_by("created_at", "pk")


def approver_groups(user: User) -> list[str]:
    """The groups a user decides for (see `reviewer_of`)."""
    return reviewer_of(user).groups


def _group_names(user: User) -> QuerySet | list[str]:
    """The user's group names: the cached list, else a subquery (no round trip of its own)."""
    if hasattr(user, "_baton_reviewer"):
        return user._baton_reviewer.groups
    held = Q(user=user.pk) | Q(name=ADMIN) if user.is_superuser else Q(user=user.pk)
    return Group.objects.filter(held).values("name")


def _clearance(user: User) -> int | Coalesce:
    """The user's clearance rank: the cached value, else a subquery."""
    if hasattr(user, "_baton_reviewer"):
        return user._baton_reviewer.clearance
    return _clearance_subquery(user)


def users_who_may_decide(approver_group: str, sensitivity: str, requested_by: str) -> QuerySet:
    """The approver group's members cleared for a request's data, its requester aside: those in
    whose inbox it shows (the rule `_decidable` asks of one user, asked of them all)."""
    return (
        get_user_model()
        .objects.filter(groups__name=approver_group)
        .exclude(username=requested_by)
        .annotate(cleared_for=Coalesce("clearance__level", Value(int(ReviewerClearance.DEFAULT))))
        .filter(cleared_for__gte=PendingAction.SENSITIVITY_RANKS[sensitivity])
    )


def _clearance_subquery(user: User) -> Coalesce:
    return Coalesce(
        Subquery(ReviewerClearance.objects.filter(user_id=user.pk).values("level")[:1]),
        Value(int(ReviewerClearance.DEFAULT)),
    )


def _is_agent(user: User) -> Exists:
    return Exists(Group.objects.filter(user=user.pk, name=AGENT))  # an agent never decides


def _decidable(user_id: int, groups: QuerySet | Sequence[str], clearance: int | Coalesce) -> Q:
    """Requests of these groups within this clearance, not of the user's own runs."""
    return Q(approver_group__in=groups, sensitivity_rank__lte=clearance) & ~Q(requested_by_id=user_id)
