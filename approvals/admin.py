from django.contrib import admin

from controlplane.admin_base import ReadOnlyAdmin
from controlplane.identity import actor_for

from .models import ApprovalDecision, ReviewerClearance
from .services import reviewer_clearance_set


@admin.register(ReviewerClearance)
class ReviewerClearanceAdmin(admin.ModelAdmin):
    """Admins set how sensitive the data a reviewer may decide on can be; each change is audited."""

    list_display = ["user", "level", "updated_at"]
    list_filter = ["level"]
    search_fields = ["user__username"]
    fields = ["user", "level"]
    autocomplete_fields = ["user"]

    def get_readonly_fields(self, request, obj=None):
        return ["user"] if obj else []

    def save_model(self, request, obj, form, change) -> None:
        saved = reviewer_clearance_set(user=obj.user, level=obj.level, actor=actor_for(request.user))
        obj.pk, obj.updated_at = saved.pk, saved.updated_at

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # lower the level instead: the change is then audited


@admin.register(ApprovalDecision)
class ApprovalDecisionAdmin(ReadOnlyAdmin):
    list_display = ["pending_action", "reviewer", "decision", "approver_group", "created_at"]
    list_filter = ["decision", "approver_group"]
    search_fields = ["reviewer__username", "action_hash"]
