"""The sandbox's records: a small CRM (cases, refunds), its knowledge base and its idempotency table."""

from decimal import Decimal

from django.db import models
from django.db.models.functions import Now


class SupportCase(models.Model):
    """A customer's case, which the demo workflows read, resolve and reopen."""

    class Status(models.TextChoices):
        OPEN = "open"
        RESOLVED = "resolved"
        REOPENED = "reopened"

    case_id = models.CharField(max_length=100, unique=True, help_text="The business key, e.g. CASE-1001.")
    customer = models.CharField(max_length=200)
    subject = models.CharField(max_length=300)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    resolution = models.TextField(blank=True, help_text="The reply the case was resolved with.")
    refund_total = models.DecimalField(
        max_digits=12, decimal_places=2, default=Decimal("0.00"), help_text="Issued and not reversed."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["case_id"]

    def __str__(self) -> str:
        return f"{self.case_id} ({self.status})"


class Effect(models.Model):
    """One write, recorded under the idempotency key of the call that made it.

    The unique key is what makes a write happen once: the first call with a key applies it
    and stores its reply here in the same transaction; every later call with that key gets
    the stored reply back instead of a second effect. A reconcile lookup reads this table.
    """

    idempotency_key = models.CharField(max_length=255, unique=True)
    operation = models.CharField(max_length=100)
    args = models.JSONField()
    result = models.JSONField(default=dict)
    effect_id = models.CharField(max_length=100, blank=True, help_text="e.g. case-update:42")
    created_at = models.DateTimeField(db_default=Now())
    compensated_by_key = models.CharField(
        max_length=255, blank=True, default="", help_text="Idempotency key of the write that undid this one."
    )

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [models.Index(fields=["effect_id"], name="sandbox_effect_id_idx")]

    def __str__(self) -> str:
        return f"{self.effect_id or self.operation} for {self.idempotency_key}"


class Refund(models.Model):
    """Money returned on a case. A compensation marks it reversed; the row stays as history."""

    class Status(models.TextChoices):
        ISSUED = "issued"
        REVERSED = "reversed"

    case = models.ForeignKey(SupportCase, on_delete=models.PROTECT, related_name="refunds")
    effect = models.ForeignKey(
        Effect, on_delete=models.PROTECT, related_name="refunds", help_text="The case update that issued it."
    )
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ISSUED)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.amount} on {self.case_id} ({self.status})"


class KnowledgeArticle(models.Model):
    """A support article that `kb_search` matches by keyword."""

    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    body = models.TextField()
    tags = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.title


class Dataset(models.Model):
    """A table in the sandbox's data warehouse, with the schema its producers promised."""

    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    owner = models.CharField(max_length=200, help_text="The producing team.")
    source = models.CharField(max_length=200, help_text="Where batches are loaded from.")
    upstream = models.JSONField(default=list, blank=True, help_text="Datasets this one is derived from.")
    expected_columns = models.JSONField(help_text="Column name to type: string, number, boolean.")
    baseline_rows = models.PositiveIntegerField(help_text="Rows in a normal batch.")

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class DatasetBatch(models.Model):
    """One delivered batch of a dataset: the rows a pipeline run reviews."""

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="batches")
    batch_id = models.CharField(max_length=100)
    rows = models.JSONField()

    class Meta:
        ordering = ["dataset", "batch_id"]
        constraints = [models.UniqueConstraint(fields=["dataset", "batch_id"], name="one_batch_per_id")]

    def __str__(self) -> str:
        return f"{self.dataset_id}/{self.batch_id}"


class CatalogEntry(models.Model):
    """Metadata published about a batch: its review, lineage and tags. Retraction keeps the row."""

    class Status(models.TextChoices):
        PUBLISHED = "published"
        RETRACTED = "retracted"

    batch = models.ForeignKey(DatasetBatch, on_delete=models.PROTECT, related_name="catalog_entries")
    effect = models.ForeignKey(Effect, on_delete=models.PROTECT, related_name="catalog_entries")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PUBLISHED)
    severity = models.CharField(max_length=10)
    report = models.TextField()
    lineage = models.JSONField(default=dict)
    tags = models.JSONField(default=list)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.batch} ({self.status})"


class Outage(models.Model):
    """A simulated outage, so that demos and tests see the engine retry: the sandbox refuses the
    first `refusals` attempts of every call of `operation` about `subject`, then serves it.

    Counting per call (per idempotency key) rather than by the clock makes it deterministic:
    each run that reaches the record meets the same number of refusals, however busy the worker.
    """

    operation = models.CharField(max_length=100, help_text="e.g. publish_metadata")
    subject = models.CharField(
        max_length=200, help_text="The record concerned: a case id, or dataset/batch id for the data catalog."
    )
    refusals = models.PositiveIntegerField(help_text="Attempts of each call refused before it is served.")

    class Meta:
        ordering = ["operation", "subject"]
        constraints = [
            models.UniqueConstraint(fields=["operation", "subject"], name="one_outage_per_subject")
        ]

    def __str__(self) -> str:
        return f"{self.operation} on {self.subject} (refuses {self.refusals})"


class RefusedCall(models.Model):
    """The attempts of one call (by its idempotency key) that an outage has refused so far."""

    outage = models.ForeignKey(Outage, on_delete=models.CASCADE, related_name="refused_calls")
    idempotency_key = models.CharField(max_length=255)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["outage", "idempotency_key"], name="one_refusal_count_per_call")
        ]

    def __str__(self) -> str:
        return f"{self.idempotency_key}: {self.attempts} refused"
