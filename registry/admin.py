from django.contrib import admin

from controlplane.admin_base import ReadOnlyAdmin

from .models import Agent, Artifact, Channel, ChannelChange, Release, ReleaseEvaluation, ReleaseSignOff, Team


@admin.register(Team)
class TeamAdmin(ReadOnlyAdmin):
    list_display = ["slug", "name", "support_queue"]


@admin.register(Agent)
class AgentAdmin(ReadOnlyAdmin):
    list_display = ["slug", "display_name", "owner_team", "status", "data_classification"]
    list_filter = ["status", "data_classification", "owner_team"]
    search_fields = ["slug", "display_name"]


@admin.register(Artifact)
class ArtifactAdmin(ReadOnlyAdmin):
    list_display = ["kind", "name", "version", "digest", "author", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name", "digest"]


@admin.register(Release)
class ReleaseAdmin(ReadOnlyAdmin):
    list_display = ["id", "workflow", "author", "created_at"]
    list_filter = ["workflow"]


@admin.register(ReleaseEvaluation)
class ReleaseEvaluationAdmin(ReadOnlyAdmin):
    list_display = ["release", "suite", "score", "recorded_by", "created_at"]


@admin.register(ReleaseSignOff)
class ReleaseSignOffAdmin(ReadOnlyAdmin):
    list_display = ["release", "user", "created_at"]


@admin.register(Channel)
class ChannelAdmin(ReadOnlyAdmin):
    list_display = ["workflow", "name", "release", "baseline", "mode", "canary_percent", "requires_gates"]


@admin.register(ChannelChange)
class ChannelChangeAdmin(ReadOnlyAdmin):
    list_display = ["channel", "action", "release", "baseline", "mode", "actor", "created_at"]
