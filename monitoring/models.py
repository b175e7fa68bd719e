"""Incidents: what Baton did on its own when a release misbehaved (NIST SP 800-53 IR-4)."""

from django.db import models
from django.db.models.functions import Now

from registry.models import Channel, Release


class Incident(models.Model):
    """An automatic rollback: which release, measured against what, and why it was pulled."""

    class Kind(models.TextChoices):
        AUTO_ROLLBACK = "auto_rollback"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="+")
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="incidents")
    baseline = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="+")
    breaches = models.JSONField(help_text="The thresholds crossed, one sentence each.")
    release_metrics = models.JSONField()
    baseline_metrics = models.JSONField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["release", "-created_at"], name="incident_release_idx")]

    def __str__(self) -> str:
        return f"incident {self.pk}: {self.kind} of {self.release_id} on {self.channel}"
