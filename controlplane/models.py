"""The shared kernel's data: the audit ledger and API credentials."""

from django.conf import settings
from django.db import models
from django.utils import timezone

GENESIS_HASH = "0" * 64


class AuditEvent(models.Model):
    """One entry of the append-only, hash-chained audit ledger.

    `seq` is the gap-free position in the chain and the primary key; each event's hash
    covers the previous event's hash, so an edit, deletion, insertion or reordering
    anywhere breaks every later link. The table has no foreign keys on purpose: the
    ledger outlives whatever it describes. A database trigger refuses UPDATE and DELETE.
    """

    # What an event's hash covers after the previous hash (the payload through its digest).
    HASHED_FIELDS = (
        "seq", "created_at", "actor", "action", "object_type", "object_id", "trace_id", "run_id",
        "release_id", "payload_digest",
    )  # fmt: skip

    seq = models.BigIntegerField(primary_key=True)
    created_at = models.DateTimeField(help_text="Taken from the database clock, never a worker's.")
    actor = models.CharField(max_length=200, help_text="Who acted: 'user:alice', 'agent:triage', 'system:…'.")
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=100)
    trace_id = models.CharField(max_length=32, blank=True, default="")
    run_id = models.CharField(max_length=36, blank=True, default="")
    release_id = models.CharField(max_length=80, blank=True, default="")
    payload = models.JSONField(default=dict)
    payload_digest = models.CharField(max_length=64)
    prev_hash = models.CharField(max_length=64)
    # Not unique on purpose: `seq` orders the chain and the links prove it; nothing looks an
    # event up by its hash, and two random-order indexes would slow every append.
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["run_id", "seq"], name="audit_run_seq_idx"),
            models.Index(fields=["object_type", "object_id", "seq"], name="audit_object_seq_idx"),
            models.Index(fields=["created_at"], name="audit_created_idx"),
            models.Index(fields=["trace_id"], name="audit_trace_idx"),
            models.Index(fields=["action", "seq"], name="audit_action_seq_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.object_type}:{self.object_id} by {self.actor}"


class ApiKeyQuerySet(models.QuerySet):
    def usable(self) -> "ApiKeyQuerySet":
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, user__is_active=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    """A REST credential acting for one user, limited to its scopes and lifetime.

    Only the sha256 of the key is stored; the key itself is shown once, at creation.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Who issued it (none for a key issued by command): the person holding an agent's key.",
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, help_text="Public part of the key, safe to show.")
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix} ({self.user})"

    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()
