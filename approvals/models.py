"""Reviewers' decisions on approval requests, and how much data each reviewer may see."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from runs.models import PendingAction


class ReviewerClearance(models.Model):
    """The most sensitive data a reviewer may see and decide on; without a row, internal."""

    class Level(models.IntegerChoices):
        PUBLIC = PendingAction.SENSITIVITY_RANKS["public"], "public"
        INTERNAL = PendingAction.SENSITIVITY_RANKS["internal"], "internal"
        CONFIDENTIAL = PendingAction.SENSITIVITY_RANKS["confidential"], "confidential"
        RESTRICTED = PendingAction.SENSITIVITY_RANKS["restricted"], "restricted"

    DEFAULT = Level.INTERNAL

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="clearance")
    level = models.PositiveSmallIntegerField(choices=Level.choices, default=DEFAULT)
    updated_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"{self.user} cleared for {self.get_level_display()}"


class ApprovalDecision(models.Model):
    """One reviewer's decision on one request, bound to the exact action they saw.

    Append-only (database triggers refuse UPDATE and DELETE): the approval history is
    evidence. A reviewer decides a request at most once; a quorum is counted in these rows.
    """

    class Verdict(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    pending_action = models.ForeignKey(PendingAction, on_delete=models.PROTECT, related_name="decisions")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=10, choices=Verdict.choices)
    reason = models.TextField(blank=True, default="")
    approver_group = models.CharField(max_length=150, help_text="The group the reviewer decided for.")
    action_hash = models.CharField(max_length=64, help_text="The proposed action this decision binds to.")
    policy_decision_id = models.BigIntegerField(null=True, blank=True)
    credential = models.CharField(max_length=16, blank=True, default="", help_text="API key prefix, if any.")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["pending_action", "created_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["pending_action", "reviewer"], name="one_decision_per_reviewer"),
        ]
        indexes = [models.Index(fields=["reviewer", "-created_at"], name="decision_reviewer_idx")]

    def __str__(self) -> str:
        return f"{self.reviewer} {self.decision}d request {self.pending_action_id}"
