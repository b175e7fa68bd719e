from django.contrib import admin

from controlplane.admin_base import ReadOnlyAdmin

from .models import Run, StepCheckpoint


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ["id", "workflow", "case_id", "status", "current_state", "requested_by", "created_at"]
    list_filter = ["status", "workflow"]
    search_fields = ["id", "case_id", "trace_id"]


@admin.register(StepCheckpoint)
class StepCheckpointAdmin(ReadOnlyAdmin):
    list_display = ["run", "sequence", "state", "finished_at"]
