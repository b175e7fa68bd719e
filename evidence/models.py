"""Signed checkpoints of the audit chain, and evidence exports prepared for download."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class AuditCheckpoint(models.Model):
    """A signed statement that, at `created_at`, the chain's event `seq` had hash `head_hash`.

    The chain alone cannot show that its newest events were cut off; a checkpoint can: the
    chain must still reach `seq` with the same hash. Checkpoints are append-only, and every
    evidence package carries the one made for it, so a copy also lives outside the database.
    """

    class Reason(models.TextChoices):
        INTERVAL = "interval"
        EXPORT = "export"

    seq = models.BigIntegerField(help_text="The head of the chain when the checkpoint was signed.")
    head_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(help_text="Database time, part of the signed statement.")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    key_id = models.CharField(max_length=16)
    signature = models.CharField(max_length=100)

    class Meta:
        ordering = ["-seq", "-pk"]
        indexes = [models.Index(fields=["seq"], name="checkpoint_seq_idx")]

    def __str__(self) -> str:
        return f"checkpoint #{self.seq} at {self.created_at:%Y-%m-%d %H:%M:%S}"

    def statement(self) -> dict:
        """What the signature covers."""
        return {
            "seq": self.seq,
            "head_hash": self.head_hash,
            "created_at": self.created_at.isoformat(timespec="microseconds"),
            "key_id": self.key_id,
        }


class EvidenceExport(models.Model):
    """An evidence package built in the background for the evidence page (large windows)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        READY = "ready"
        FAILED = "failed"

    class Format(models.TextChoices):
        JSON = "json"
        CSV = "csv"
        PDF = "pdf"

    scope = models.JSONField(help_text="run, release, or since/until.")
    format = models.CharField(max_length=4, choices=Format.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    checkpoint = models.ForeignKey(AuditCheckpoint, on_delete=models.PROTECT, related_name="+")
    created_by = models.CharField(max_length=200, help_text="The audit label of who asked.")
    runs_total = models.PositiveIntegerField(default=0)
    runs_done = models.PositiveIntegerField(default=0)
    package_digest = models.CharField(max_length=64, blank=True, default="")
    size = models.PositiveBigIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(db_default=Now())
    enqueued_at = models.DateTimeField(db_default=Now(), help_text="When its build was last sent.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["requested_by", "-created_at"], name="export_requester_idx")]

    def __str__(self) -> str:
        return f"evidence export {self.pk} ({self.status})"

    @property
    def percent(self) -> int:
        if self.status == self.Status.READY:
            return 100
        return int(100 * self.runs_done / self.runs_total) if self.runs_total else 0

    @property
    def filename(self) -> str:
        return f"baton-evidence-{self.pk}.zip"
