"""Replays of recorded runs, and batches of them that evaluate a release."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class ReplayBatch(models.Model):
    """A release replayed against the last N finished runs of its workflow: evaluation evidence
    for its promotion (attached to the release as the `replay` suite)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    release = models.ForeignKey("registry.Release", on_delete=models.PROTECT, related_name="replay_batches")
    workflow = models.CharField(max_length=200)
    last_n = models.PositiveIntegerField()
    reason = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0, help_text="Runs chosen for the batch.")
    done = models.PositiveIntegerField(default=0, help_text="Runs replayed so far.")
    summary = models.JSONField(default=dict, blank=True)
    evaluation = models.ForeignKey(
        "registry.ReleaseEvaluation", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    error = models.TextField(blank=True, default="")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(db_default=Now())
    enqueued_at = models.DateTimeField(db_default=Now(), help_text="When it was last sent to the workers.")
    started_at = models.DateTimeField(null=True, blank=True, help_text="When a worker claimed it.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["release", "-created_at"], name="replay_batch_release_idx")]

    def __str__(self) -> str:
        return f"{self.release_id} against the last {self.last_n} runs of {self.workflow}"


class Replay(models.Model):
    """One replay of one recorded run, and what it found.

    Deterministic: the run's own release, every model and tool answer from the recording.
    What-if: another release in shadow mode; tool answers still come from the recording,
    models are asked afresh only where their prompt or configuration changed.
    """

    class Mode(models.TextChoices):
        DETERMINISTIC = "deterministic"
        WHAT_IF = "what_if", "what-if"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    class Outcome(models.TextChoices):
        PENDING = "", "not yet replayed"
        REPRODUCED = "reproduced"  # same transitions, outputs, decisions and end
        DIVERGED = "diverged"  # differs from the original; `first_difference` says where
        INCOMPLETE = "incomplete"  # needed an answer the recording does not hold

    run = models.ForeignKey("runs.Run", on_delete=models.PROTECT, related_name="replays")
    release_id = models.CharField(max_length=80, blank=True, default="", help_text="Empty for built-ins.")
    mode = models.CharField(max_length=20, choices=Mode.choices)
    reason = models.TextField()
    batch = models.ForeignKey(
        ReplayBatch, on_delete=models.PROTECT, null=True, blank=True, related_name="replays"
    )
    shadow = models.BooleanField(default=False, help_text="Started by a shadow rollout, not a person.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True, default="")
    first_difference = models.TextField(blank=True, default="")
    report = models.JSONField(default=dict, blank=True, help_text="Step by step: original beside replay.")
    error = models.TextField(blank=True, default="")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty for a shadow replay, which the control plane starts itself.",
    )
    created_at = models.DateTimeField(db_default=Now())
    enqueued_at = models.DateTimeField(db_default=Now(), help_text="When it was last sent to the workers.")
    started_at = models.DateTimeField(null=True, blank=True, help_text="When a worker claimed it.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="replay_created_idx"),
            models.Index(fields=["run", "-created_at"], name="replay_run_idx"),
            # The sweeper's scans read only the few unfinished replays, however long the history.
            models.Index(
                fields=["status"],
                condition=models.Q(status__in=["queued", "running"]),
                name="replay_unfinished_idx",
            ),
        ]
        constraints = [
            # Overlapping beat ticks both find a run without its shadow replay: one of them makes it.
            models.UniqueConstraint(
                fields=["run"], condition=models.Q(shadow=True), name="replay_one_shadow_per_run"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_mode_display()} replay of {self.run_id}"
