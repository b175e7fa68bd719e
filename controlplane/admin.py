from django.contrib import admin

from .admin_base import ReadOnlyAdmin
from .identity import Actor, api_key_revoke
from .models import ApiKey, AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["seq", "created_at", "actor", "action", "object_type", "object_id", "run_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_id", "run_id", "trace_id"]
    show_full_result_count = False


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = [
        "prefix",
        "user",
        "name",
        "scopes",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "user__username", "name"]
    exclude = ["key_hash"]
    actions = ["revoke"]

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request, queryset) -> None:
        for api_key in queryset.select_related("user"):
            api_key_revoke(api_key=api_key, revoked_by=Actor(name=request.user.get_username()))
        self.message_user(request, f"Revoked {queryset.count()} key(s).")

    def has_change_permission(self, request, obj=None) -> bool:
        # Actions need the change permission; the form stays read-only as no field is editable.
        return request.user.is_superuser
