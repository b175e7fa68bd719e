"""Runs of workflows and their checkpoints: the durable state of the data plane."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class Run(models.Model):
    """One execution of a workflow for one business case, pinned to what it runs.

    PostgreSQL holds the whole state; a broker message only says "advance run X". A worker
    owns a run while its lease is valid; the sweeper hands expired leases to another.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        WAITING_APPROVAL = "waiting_approval"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        COMPENSATING = "compensating"
        COMPENSATED = "compensated"
        DEAD_LETTERED = "dead_lettered"
        CANCELLED = "cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    FINISHED_STATUSES = (
        Status.SUCCEEDED,
        Status.FAILED,
        Status.COMPENSATED,
        Status.DEAD_LETTERED,
        Status.CANCELLED,
    )

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.CharField(max_length=200)
    workflow_version = models.CharField(max_length=50)
    release_id = models.CharField(max_length=80, blank=True, default="")
    case_id = models.CharField(max_length=200, help_text="The business key of the case this run works on.")
    input = models.JSONField(help_text="The original input; it travels with the run unchanged.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    current_state = models.CharField(max_length=100, blank=True, default="")
    error = models.TextField(blank=True, default="")
    trace_id = models.CharField(max_length=32)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="runs")
    idempotency_key = models.CharField(max_length=200, blank=True, default="")
    request_digest = models.CharField(max_length=64, help_text="Digest of the submitted body.")
    lease_owner = models.CharField(max_length=64, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["requested_by", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="run_idempotency_key_per_requester",
            ),
        ]
        indexes = [
            models.Index(fields=["-created_at", "id"], name="run_created_idx"),
            models.Index(fields=["status", "-created_at"], name="run_status_created_idx"),
            models.Index(fields=["workflow", "-created_at"], name="run_workflow_created_idx"),
            models.Index(fields=["requested_by", "-created_at"], name="run_requester_created_idx"),
            models.Index(
                fields=["lease_expires_at"],
                condition=models.Q(status__in=["queued", "running"]),
                name="run_active_lease_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} run {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED_STATUSES


class StepCheckpoint(models.Model):
    """A completed step and its validated output: what a resumed run continues from."""

    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="checkpoints")
    sequence = models.PositiveIntegerField(help_text="1 for the first step the run completed.")
    state = models.CharField(max_length=100)
    output = models.JSONField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["run", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["run", "sequence"], name="checkpoint_once_per_position"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} #{self.sequence} {self.state}"
