from django.db.models import QuerySet

from .models import PolicyDecision


def decisions_list(
    *,
    point: str = "",
    allow: bool | None = None,
    run_id: str = "",
    bundle_digest: str = "",
    failure: str = "",
) -> QuerySet[PolicyDecision]:
    decisions = PolicyDecision.objects.order_by("-created_at", "-pk")
    if point:
        decisions = decisions.filter(decision_point=point)
    if allow is not None:
        decisions = decisions.filter(allow=allow)
    if run_id:
        decisions = decisions.filter(run_id=run_id)
    if bundle_digest:
        decisions = decisions.filter(bundle_digest=bundle_digest)
    if failure:
        decisions = decisions.filter(failure=failure)
    return decisions
