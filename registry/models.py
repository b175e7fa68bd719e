"""The registry: who the agents are, what exactly they run, and where each release is live."""

import re

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class Team(models.Model):
    """People who own agents and answer for them: the support queue or pager alias to call."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    support_queue = models.CharField(max_length=200, blank=True, help_text="Queue or pager alias.")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="teams")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    """An AI agent with an owner, a purpose, service level objectives and its own identity.

    `allowed_tools` lists the tools it may call, each with the widest side-effect scope it
    may use (`read` < `write` < `irreversible`). Its lifecycle runs draft → active →
    deprecated → retired; a retired agent may not appear in a new release or run.
    """

    class Status(models.TextChoices):
        DRAFT = "draft"
        ACTIVE = "active"
        DEPRECATED = "deprecated"
        RETIRED = "retired"

    class Classification(models.TextChoices):
        PUBLIC = "public"
        INTERNAL = "internal"
        CONFIDENTIAL = "confidential"
        RESTRICTED = "restricted"

    slug = models.SlugField(max_length=100, unique=True)
    display_name = models.CharField(max_length=200)
    owner_team = models.ForeignKey(
        Team, on_delete=models.PROTECT, null=True, blank=True, related_name="agents"
    )
    purpose = models.TextField(blank=True)
    runbook_url = models.URLField(blank=True)
    # The most a PositiveIntegerField holds on every database: forms, the API and bundle files say so.
    MAX_SLO_P95_LATENCY_MS = 2_147_483_647
    slo_p95_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    slo_success_rate = models.DecimalField(max_digits=5, decimal_places=4, null=True, blank=True)
    data_classification = models.CharField(
        max_length=20, choices=Classification.choices, default=Classification.INTERNAL
    )
    allowed_tools = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    service_user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="agent_identity"
    )
    retired_at = models.DateTimeField(null=True, blank=True)
    retirement_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["slug"]
        indexes = [
            models.Index(fields=["status", "slug"], name="agent_status_idx"),
            models.Index(fields=["owner_team", "slug"], name="agent_owner_idx"),
            models.Index(fields=["data_classification", "slug"], name="agent_class_idx"),
        ]

    def __str__(self) -> str:
        return self.slug

    def tool_scope(self, tool: str) -> str | None:
        return next((entry["scope"] for entry in self.allowed_tools if entry["tool"] == tool), None)


class Artifact(models.Model):
    """One published version of a prompt, model config, tool, corpus, workflow or policy bundle.

    Immutable: the service never changes a published row and a database trigger refuses
    UPDATE and DELETE. A change is a new version; `digest` is the sha256 of the canonical
    JSON of `content`.
    """

    class Kind(models.TextChoices):
        PROMPT = "prompt"
        MODEL_CONFIG = "model_config"
        TOOL = "tool"
        CORPUS = "corpus"
        WORKFLOW = "workflow"
        POLICY_BUNDLE = "policy_bundle"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    content = models.JSONField()
    digest = models.CharField(max_length=64)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["kind", "name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "name", "version"], name="artifact_version_once"),
        ]
        indexes = [models.Index(fields=["kind", "name", "-version"], name="artifact_latest_idx")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}@{self.version}"

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class Release(models.Model):
    """An immutable pin of every artifact version one workflow needs, named by its manifest.

    The id is derived from the sha256 of the canonical manifest, so the same pins always
    make the same release. Channels point at releases; rollback re-points a channel.
    """

    ID_PREFIX = "rel_"
    ID_PATTERN = re.compile(r"rel_[0-9a-f]{16}")

    id = models.CharField(max_length=40, primary_key=True)
    workflow = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True)
    manifest = models.JSONField()
    notes = models.TextField(blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(db_default=Now())
    artifacts = models.ManyToManyField(Artifact, through="ReleaseArtifact", related_name="releases")
    agents = models.ManyToManyField(Agent, through="ReleaseAgent", related_name="releases")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["workflow", "-created_at"], name="release_workflow_idx")]

    def __str__(self) -> str:
        return f"{self.id} ({self.workflow})"

    @classmethod
    def id_for(cls, manifest_digest: str) -> str:
        """The id of the release whose canonical manifest has this sha256."""
        return f"{cls.ID_PREFIX}{manifest_digest[:16]}"


class ReleaseArtifact(models.Model):
    """Which artifact versions a release pins (append-only, like the release)."""

    release = models.ForeignKey(Release, on_delete=models.PROTECT)
    artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["release", "artifact"], name="release_artifact_once")]

    def __str__(self) -> str:
        return f"{self.release_id} pins {self.artifact_id}"


class ReleaseAgent(models.Model):
    """Which agents a release's workflow runs, so an agent's page can list its releases."""

    release = models.ForeignKey(Release, on_delete=models.PROTECT)
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["release", "agent"], name="release_agent_once")]

    def __str__(self) -> str:
        return f"{self.release_id} runs {self.agent_id}"


class ReleaseEvaluation(models.Model):
    """An evaluation result attached to a release: evidence for its promotion gate."""

    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="evaluations")
    suite = models.CharField(max_length=200)
    score = models.DecimalField(max_digits=6, decimal_places=4)
    details = models.JSONField(default=dict, blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.suite}: {self.score}"


class ReleaseSignOff(models.Model):
    """A person's approval of a release for production (two-person rule, CM-3)."""

    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="signoffs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["release", "user"], name="signoff_once_per_person")]

    def __str__(self) -> str:
        return f"signed off by {self.user_id}"


class Channel(models.Model):
    """Where a workflow's traffic goes: a release, how it rolls out, and what to roll back to.

    In `canary` mode `canary_percent` of new runs get `release` and the rest `baseline`;
    in `shadow` mode every run uses `baseline` and `release` is replayed beside it.
    """

    class Mode(models.TextChoices):
        FULL = "full"
        CANARY = "canary"
        SHADOW = "shadow"

    workflow = models.CharField(max_length=100)
    name = models.CharField(max_length=50)
    requires_gates = models.BooleanField(
        default=False, help_text="Promotion needs evaluations and sign-offs."
    )
    release = models.ForeignKey(Release, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    baseline = models.ForeignKey(
        Release,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The release before the current one: what a rollback returns to.",
    )
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.FULL)
    canary_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["workflow", "name"]
        constraints = [models.UniqueConstraint(fields=["workflow", "name"], name="channel_once_per_workflow")]

    def __str__(self) -> str:
        return f"{self.workflow}/{self.name}"


class ChannelChange(models.Model):
    """One promotion or rollback of a channel: its history, newest last."""

    class Action(models.TextChoices):
        PROMOTE = "promote"
        ROLLBACK = "rollback"

    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="changes")
    action = models.CharField(max_length=10, choices=Action.choices)
    release = models.ForeignKey(Release, on_delete=models.PROTECT, null=True, related_name="+")
    baseline = models.ForeignKey(Release, on_delete=models.PROTECT, null=True, related_name="+")
    mode = models.CharField(max_length=10, choices=Channel.Mode.choices)
    canary_percent = models.PositiveSmallIntegerField(null=True)
    actor = models.CharField(max_length=200)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["channel", "-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.action} {self.release_id}"
