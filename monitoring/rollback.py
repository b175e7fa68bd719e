"""Automatic rollback: a canary that does worse than its baseline on the same channel is pulled.

Both releases serve the same channel over the same period (since the canary's promotion),
so the comparison is like for like. The thresholds are settings (ROLLBACK_*). A rollback is
the registry's one-step channel rollback, with an incident record, audit events and a
notice to the platform team.
"""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction

from controlplane.audit import record
from controlplane.errors import Conflict
from controlplane.identity import PLATFORM, Actor
from registry.models import Channel, ChannelChange
from registry.services.releases import channel_rollback
from runs.models import Run

from .models import Incident
from .workflow_metrics import WorkflowMetrics, workflow_metrics

logger = logging.getLogger(__name__)
ROLLBACK_ACTOR = Actor("auto-rollback", kind="system")


@dataclass(frozen=True)
class CanaryComparison:
    channel: Channel
    canary: WorkflowMetrics
    baseline: WorkflowMetrics
    breaches: list[str]

    @property
    def enough_runs(self) -> bool:
        minimum = settings.ROLLBACK_MIN_RUNS
        return self.canary.finished >= minimum and self.baseline.finished >= minimum


def canary_comparison(channel: Channel) -> CanaryComparison | None:
    """The canary and its baseline measured on this channel since the canary was promoted."""
    if channel.mode != Channel.Mode.CANARY or not (channel.release_id and channel.baseline_id):
        return None
    promoted = (
        ChannelChange.objects.filter(
            channel=channel, action=ChannelChange.Action.PROMOTE, release=channel.release_id
        )
        .order_by("-created_at", "-pk")
        .values_list("created_at", flat=True)
        .first()
    )
    runs = Run.objects.filter(workflow=channel.workflow, channel=channel.name)
    if promoted:
        runs = runs.filter(created_at__gte=promoted)
    canary = workflow_metrics(runs.filter(release_id=channel.release_id))
    baseline = workflow_metrics(runs.filter(release_id=channel.baseline_id))
    comparison = CanaryComparison(channel, canary, baseline, [])
    if comparison.enough_runs:
        comparison.breaches.extend(rollback_breaches(canary, baseline))
    return comparison


def rollback_breaches(canary: WorkflowMetrics, baseline: WorkflowMetrics) -> list[str]:
    """The thresholds the canary crossed, one sentence each (none: it may stay)."""
    breaches = []
    unsafe, unsafe_baseline = canary.unsafe_action_rate or 0.0, baseline.unsafe_action_rate or 0.0
    if unsafe > unsafe_baseline + settings.ROLLBACK_MAX_UNSAFE_RATE_INCREASE:
        breaches.append(f"unsafe action rate {unsafe:.1%} against the baseline's {unsafe_baseline:.1%}")
    leakage, leakage_baseline = canary.exception_leakage or 0.0, baseline.exception_leakage or 0.0
    if leakage > leakage_baseline + settings.ROLLBACK_MAX_LEAKAGE_INCREASE:
        breaches.append(f"exception leakage {leakage:.1%} against the baseline's {leakage_baseline:.1%}")
    cost, cost_baseline = canary.cost_per_completed_usd, baseline.cost_per_completed_usd
    if cost_baseline is not None and (
        cost is None or cost > cost_baseline * (1 + settings.ROLLBACK_MAX_COST_INCREASE)
    ):
        shown = "no completed task" if cost is None else f"${cost:.4f}"
        breaches.append(f"cost per completed task {shown} against the baseline's ${cost_baseline:.4f}")
    return breaches


def auto_rollback_check() -> list[Incident]:
    """Compare every canary with its baseline; roll back those that crossed a threshold."""
    incidents = []
    for channel in Channel.objects.filter(mode=Channel.Mode.CANARY, baseline__isnull=False):
        comparison = canary_comparison(channel)
        if comparison and comparison.breaches:
            incident = _roll_back(comparison)
            if incident:
                incidents.append(incident)
    return incidents


def _roll_back(comparison: CanaryComparison) -> Incident | None:
    channel = comparison.channel
    pulled, baseline = channel.release_id, channel.baseline_id
    reason = "automatic rollback: " + "; ".join(comparison.breaches)
    try:
        with transaction.atomic():
            channel_rollback(channel=channel, actor=ROLLBACK_ACTOR, reason=reason, from_release=pulled)
            incident = Incident.objects.create(
                kind=Incident.Kind.AUTO_ROLLBACK,
                channel=channel,
                release_id=pulled,
                baseline_id=baseline,
                breaches=comparison.breaches,
                release_metrics=comparison.canary.as_dict(),
                baseline_metrics=comparison.baseline.as_dict(),
            )
            record(
                ROLLBACK_ACTOR,
                "incident.opened",
                incident,
                {
                    "kind": incident.kind,
                    "channel": str(channel),
                    "baseline": baseline,
                    "breaches": comparison.breaches,
                },
                release_id=pulled,
            )
            transaction.on_commit(lambda: _notify_platform(incident))
    except Conflict:  # someone changed the channel meanwhile: their decision stands
        logger.info("channel %s changed during the rollback check; left as it is", channel)
        return None
    logger.warning("rolled back %s on %s: %s", pulled, channel, reason)
    return incident


def _notify_platform(incident: Incident) -> None:
    recipients = list(
        get_user_model()
        .objects.filter(groups__name=PLATFORM, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    if not recipients:
        return
    try:
        send_mail(
            f"[Baton] {incident.release_id} rolled back on {incident.channel}",
            "Baton rolled the channel back to its baseline because the canary crossed its thresholds:\n- "
            + "\n- ".join(incident.breaches)
            + f"\n\nIncident {incident.pk}; see the dashboard for the figures.",
            None,
            recipients,
        )
    except OSError:  # the rollback stands; the incident and the audit trail record it
        logger.exception("could not mail the platform team about incident %s", incident.pk)
