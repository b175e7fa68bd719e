"""Runs of workflows and their checkpoints: the durable state of the data plane."""

import uuid
from typing import Any

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
        COMPENSATION_FAILED = "compensation_failed"
        DEAD_LETTERED = "dead_lettered"
        REJECTED = "rejected"
        CANCELLED = "cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    FINISHED_STATUSES = (
        Status.SUCCEEDED,
        Status.FAILED,
        Status.COMPENSATED,
        Status.DEAD_LETTERED,
        Status.REJECTED,
        Status.CANCELLED,
    )

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.CharField(max_length=200)
    workflow_version = models.CharField(max_length=50)
    release_id = models.CharField(
        max_length=80, blank=True, default="", help_text="Empty for built-in workflows."
    )
    channel = models.CharField(max_length=50, blank=True, default="")
    shadow_release_id = models.CharField(
        max_length=80,
        blank=True,
        default="",
        help_text="A release to replay beside this run (shadow rollout).",
    )
    sensitivity = models.CharField(max_length=20, default="internal")
    hop_count = models.PositiveIntegerField(default=0)
    budget = models.JSONField(default=dict, help_text="Limits: tokens, tool_calls, cost_usd.")
    spent = models.JSONField(default=dict, help_text="Spent so far: tokens, tool_calls, cost_usd.")
    deadline = models.DateTimeField(null=True, blank=True)
    step_attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Failed attempts of the current step."
    )
    claims_since_progress = models.PositiveSmallIntegerField(
        default=0, help_text="Leases taken since a worker last committed anything: a crash loop detector."
    )
    case_id = models.CharField(max_length=200, help_text="The business key of the case this run works on.")
    input = models.JSONField(help_text="The original input; it travels with the run unchanged.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    current_state = models.CharField(max_length=100, blank=True, default="")
    error = models.TextField(blank=True, default="")
    trace_id = models.CharField(max_length=32)
    trace_parent = models.CharField(
        max_length=16,
        blank=True,
        default="",
        help_text="The span the run was submitted under (W3C hex): every span of the run descends from it.",
    )
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="runs")
    idempotency_key = models.CharField(max_length=200, blank=True, default="")
    request_digest = models.CharField(max_length=64, help_text="Digest of the submitted body.")
    lease_owner = models.CharField(max_length=255, blank=True, default="")
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
            models.Index(fields=["release_id", "-created_at"], name="run_release_created_idx"),
            # Clients look up the runs of a business case (GET /api/v1/runs?case_id=).
            models.Index(fields=["case_id", "-created_at"], name="run_case_created_idx"),
            # No index on lease_expires_at: each step moves it, and an indexed column changed
            # makes every update write all the indexes again, where an update of unindexed
            # columns stays on its page (HOT). The sweeper finds active runs by status.
        ]

    def __str__(self) -> str:
        return f"{self.workflow} run {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED_STATUSES


class StepCheckpoint(models.Model):
    """A completed step and its validated output: what a resumed run continues from."""

    # Indexed by the unique (run, sequence) constraint; a second index would cost every step.
    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="checkpoints", db_index=False)
    sequence = models.PositiveIntegerField(help_text="1 for the first step the run completed.")
    state = models.CharField(max_length=100)
    output = models.JSONField(help_text="The validated output, or a {'$ref': digest} when large.")
    details = models.JSONField(default=dict, help_text="Model or tool call, decisions, cost, attempts.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["run", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["run", "sequence"], name="checkpoint_once_per_position"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} #{self.sequence} {self.state}"


class Effect(models.Model):
    """The effect ledger: one row per side effect a run intends, written before the call.

    The unique idempotency key makes a second attempt find the first one's row: a committed
    effect is never repeated, and an effect whose outcome is unknown is reconciled with the
    tool's lookup before anything is retried.
    """

    class Status(models.TextChoices):
        INTENDED = "intended"  # written ahead; the call may not have been made
        UNKNOWN = "unknown"  # the call was made and its outcome was lost (timeout, crash)
        COMMITTED = "committed"
        REJECTED = "rejected"  # the tool refused: no effect
        COMPENSATED = "compensated"
        COMPENSATION_FAILED = "compensation_failed"

    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="effects")
    state = models.CharField(max_length=100)
    tool = models.CharField(max_length=100)
    idempotency_key = models.CharField(max_length=64, unique=True)
    args = models.JSONField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.INTENDED)
    result = models.JSONField(null=True, blank=True)
    effect_id = models.CharField(max_length=200, blank=True, default="")
    compensation_tool = models.CharField(max_length=100, blank=True, default="")
    compensation_result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["run", "created_at", "pk"]
        indexes = [models.Index(fields=["run", "status"], name="effect_run_status_idx")]

    def __str__(self) -> str:
        return f"{self.tool} {self.idempotency_key[:12]} ({self.status})"


class PendingAction(models.Model):
    """A run parked at a human gate: everything a reviewer needs to decide, kept for days.

    The approvals app reads these and calls back into the run engine with the decision. The
    columns after `decided_at` copy what the inbox filters and sorts on (from the run, the
    risk and the current approval stage) so that a reviewer's inbox is one indexed query on
    every database; they are filled when the row is created.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        EXPIRED = "expired"
        SUPERSEDED = "superseded"

    class Risk(models.IntegerChoices):
        LOW = 0, "low"
        MEDIUM = 1, "medium"
        HIGH = 2, "high"

    # Ranks of the data classifications, so that "cleared for at least" is a plain comparison.
    SENSITIVITY_RANKS = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}

    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="pending_actions")
    state = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    reasons = models.JSONField(default=list, help_text="Why the run stopped: conditions and policy reasons.")
    proposed_action = models.JSONField(help_text="The exact action awaiting approval: tool and arguments.")
    action_hash = models.CharField(max_length=64, help_text="Digest of the proposed action and release.")
    risk = models.JSONField(default=dict)
    approvers = models.JSONField(default=list)
    quorum = models.PositiveSmallIntegerField(default=1)
    due_at = models.DateTimeField(null=True, blank=True)
    policy_decision_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    decided_at = models.DateTimeField(null=True, blank=True)
    approver_group = models.CharField(
        max_length=150, blank=True, default="", help_text="The group whose members decide now."
    )
    stage = models.PositiveSmallIntegerField(
        default=0, help_text="Which of `approvers` signs now (each group of the list signs in turn)."
    )
    escalations = models.PositiveSmallIntegerField(default=0, help_text="Times the current stage escalated.")
    approvals = models.PositiveSmallIntegerField(default=0, help_text="Distinct approvals so far.")
    workflow = models.CharField(max_length=200, blank=True, default="")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    sensitivity_rank = models.PositiveSmallIntegerField(default=1)
    risk_rank = models.PositiveSmallIntegerField(choices=Risk.choices, default=Risk.LOW)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["status", "due_at"], name="pending_status_due_idx"),
            models.Index(fields=["run", "status"], name="pending_run_idx"),
            models.Index(fields=["status", "approver_group", "due_at", "id"], name="pending_inbox_due_idx"),
            models.Index(
                fields=["status", "approver_group", "-risk_rank", "due_at", "id"],
                name="pending_inbox_risk_due_idx",
            ),
            models.Index(
                fields=["status", "approver_group", "-created_at", "-id"], name="pending_inbox_recent_idx"
            ),
            models.Index(fields=["approver_group", "-created_at", "-id"], name="pending_group_recent_idx"),
            models.Index(fields=["-created_at", "-id"], name="pending_recent_idx"),
            # The history filtered by the day of the decision; open requests have none.
            models.Index(
                fields=["decided_at"],
                condition=models.Q(decided_at__isnull=False),
                name="pending_decided_idx",
            ),
            # Counting a reviewer's open requests reads this index alone, however long the history.
            models.Index(
                fields=["approver_group", "sensitivity_rank", "requested_by"],
                condition=models.Q(status="pending"),
                name="pending_open_count_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} {self.state} ({self.status})"

    def save(self, *args, **kwargs) -> None:
        if self._state.adding:
            self.workflow = self.workflow or self.run.workflow
            self.requested_by_id = self.requested_by_id or self.run.requested_by_id
            self.sensitivity_rank = self.SENSITIVITY_RANKS.get(self.run.sensitivity, 3)
            self.risk_rank = self.risk_rank_of(self.risk, self.quorum)
            self.approver_group = self.approver_group or (self.approvers or [""])[0]
        super().save(*args, **kwargs)

    @classmethod
    def risk_rank_of(cls, risk: dict, quorum: int) -> int:
        """High: irreversible, or asking for more than one approver; medium: any other write
        or a gate whose conditions fired; low: the rest (a hand-off to a human)."""
        if risk.get("side_effect") == "irreversible" or quorum > 1:
            return cls.Risk.HIGH
        if risk.get("side_effect") == "write" or risk.get("conditions"):
            return cls.Risk.MEDIUM
        return cls.Risk.LOW

    @property
    def sensitivity(self) -> str:
        return next(name for name, rank in self.SENSITIVITY_RANKS.items() if rank == self.sensitivity_rank)


class Payload(models.Model):
    """A large value stored once and passed between steps by reference (its digest)."""

    digest = models.CharField(max_length=64, primary_key=True)
    content = models.JSONField()
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"payload {self.digest[:12]} ({self.size} bytes)"

    @staticmethod
    def is_reference(value: Any) -> bool:
        """Is `value` the {"$ref": digest, "size": bytes} that stands for a stored payload?"""
        return isinstance(value, dict) and set(value) == {"$ref", "size"}


class MapBranch(models.Model):
    """One branch of a `map` step: its element, its own attempts, lease and checkpointed output.

    Branches run as their own tasks, at most the step's `concurrency` holding a slot (queued or
    running) at once; the branch whose commit settles the last one hands the run back to the
    queue for the fan-in. `sequence` is the checkpoint position the map step will take, so a
    state visited twice has two sets of branches.
    """

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for a slot
        QUEUED = "queued"  # holds a slot; its task is on the queue (or waiting out a retry delay)
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"  # never ran: another branch failed or the run was cancelled

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    SETTLED_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="map_branches")
    sequence = models.PositiveIntegerField(help_text="The checkpoint position of the map step.")
    state = models.CharField(max_length=100)
    index = models.PositiveIntegerField(help_text="Position of the element in the list mapped over.")
    item = models.JSONField(help_text="The element this branch works on.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Failed attempts so far.")
    claims_since_progress = models.PositiveSmallIntegerField(default=0)
    output = models.JSONField(null=True, blank=True, help_text="The validated output, or a {'$ref': digest}.")
    details = models.JSONField(default=dict, help_text="Model or tool call, decisions, cost.")
    error = models.TextField(blank=True, default="")
    lease_owner = models.CharField(max_length=255, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["run", "sequence", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "sequence", "index"], name="map_branch_once_per_element"),
        ]
        indexes = [
            models.Index(
                fields=["lease_expires_at"],
                condition=models.Q(status__in=["queued", "running"]),
                name="map_branch_active_lease_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} {self.state}[{self.index}] ({self.status})"
