"""The decision log: every policy decision Baton made, as OPA's decision log keeps it."""

from django.db import models
from django.db.models.functions import Now


class PolicyDecision(models.Model):
    """One answer of the policy engine at a decision point, written in the transaction of the
    action it allowed or denied. Append-only: a database trigger refuses UPDATE and DELETE."""

    class Failure(models.TextChoices):
        NONE = "", "none"
        UNAVAILABLE = "policy_unavailable"  # engine error or timeout
        UNDEFINED = "policy_undefined"  # no answer, or an answer of the wrong shape
        INVALID_INPUT = "policy_input_invalid"  # the caller built an input the point does not accept

    decision_point = models.CharField(max_length=40)
    input_version = models.PositiveSmallIntegerField()
    input = models.JSONField(help_text="The input document, with its sensitive fields redacted.")
    input_digest = models.CharField(max_length=64, help_text="Digest of the full input, before redaction.")
    bundle_name = models.CharField(max_length=100)
    bundle_version = models.PositiveIntegerField(null=True, blank=True)
    bundle_digest = models.CharField(max_length=64)
    engine = models.CharField(max_length=20)
    allow = models.BooleanField()
    require_approval = models.BooleanField()
    approvers = models.JSONField(default=list)
    quorum = models.PositiveSmallIntegerField(null=True, blank=True)
    reasons = models.JSONField(default=list)
    obligations = models.JSONField(default=dict)
    failure = models.CharField(max_length=30, choices=Failure.choices, blank=True, default="")
    latency_us = models.PositiveIntegerField()
    actor = models.CharField(max_length=200, blank=True, default="")
    trace_id = models.CharField(max_length=32, blank=True, default="")
    run_id = models.CharField(max_length=36, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="decision_created_idx"),
            models.Index(fields=["decision_point", "-created_at"], name="decision_point_idx"),
            models.Index(fields=["run_id", "created_at"], name="decision_run_idx"),
            models.Index(fields=["bundle_digest", "-created_at"], name="decision_bundle_idx"),
            models.Index(fields=["allow", "-created_at"], name="decision_allow_idx"),
            # The log filtered by failure (an outage's decisions) reads the failed ones alone;
            # the rest, nearly all of them, are left out of the index and cost it no write.
            models.Index(
                fields=["failure", "-created_at", "-id"],
                condition=~models.Q(failure=""),
                name="decision_failure_idx",
            ),
            # A run's `run.start` is decided before the run exists, so it has no run id: its
            # evidence finds it by the run's trace. Only decisions without a run are indexed.
            models.Index(
                fields=["trace_id"], condition=models.Q(run_id=""), name="decision_runless_trace_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.decision_point}: {'allow' if self.allow else 'deny'}"
