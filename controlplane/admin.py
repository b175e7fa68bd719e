from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group

from .admin_base import ReadOnlyAdmin
from .audit import record
from .identity import Actor, actor_for, api_key_revoke
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
        # The list's revoke action needs the change permission; a key itself is never edited
        # (un-revoking it, widening its scopes or moving it to another user would be unaudited).
        return request.user.is_superuser and obj is None


class AuditedAccountsAdmin:
    """Who may do what is decided by groups and the superuser flag: every change an admin makes
    to them is an audit event too, written in the admin's transaction beside its own log."""

    audited_as = ""  # and an `audited_state(obj)` giving what the event records

    def log_addition(self, request, obj, message):
        entry = super().log_addition(request, obj, message)
        record(actor_for(request.user), f"{self.audited_as}.created", obj, self.audited_state(obj))
        return entry

    def log_change(self, request, obj, message):
        entry = super().log_change(request, obj, message)
        fields = sorted({name for part in message if "changed" in part for name in part["changed"]["fields"]})
        payload = {"changed": fields, **self.audited_state(obj)}
        record(actor_for(request.user), f"{self.audited_as}.changed", obj, payload)
        return entry

    def log_deletions(self, request, queryset):
        entries = super().log_deletions(request, queryset)
        for obj in queryset:
            record(actor_for(request.user), f"{self.audited_as}.deleted", obj, self.audited_state(obj))
        return entries


admin.site.unregister(get_user_model())
admin.site.unregister(Group)


@admin.register(get_user_model())
class AuditedUserAdmin(AuditedAccountsAdmin, UserAdmin):
    audited_as = "user"

    def audited_state(self, obj) -> dict:
        return {
            "username": obj.get_username(),
            "groups": sorted(obj.groups.values_list("name", flat=True)),
            "is_active": obj.is_active,
            "is_staff": obj.is_staff,
            "is_superuser": obj.is_superuser,
        }


@admin.register(Group)
class AuditedGroupAdmin(AuditedAccountsAdmin, GroupAdmin):
    audited_as = "group"

    def audited_state(self, obj) -> dict:
        return {
            "name": obj.name,
            "permissions": sorted(obj.permissions.values_list("codename", flat=True)),
        }
