from django.contrib import admin

from controlplane.admin_base import ReadOnlyAdmin

from .models import Effect, KnowledgeArticle, Outage, Refund, RefusedCall, SupportCase


@admin.register(SupportCase)
class SupportCaseAdmin(ReadOnlyAdmin):
    list_display = ["case_id", "customer", "subject", "status", "refund_total", "updated_at"]
    list_filter = ["status"]
    search_fields = ["case_id", "customer", "subject"]


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ["case", "amount", "status", "effect", "created_at"]
    list_filter = ["status"]


@admin.register(Effect)
class EffectAdmin(ReadOnlyAdmin):
    list_display = ["idempotency_key", "operation", "effect_id", "compensated_by_key", "created_at"]
    list_filter = ["operation"]
    search_fields = ["idempotency_key", "effect_id"]


@admin.register(KnowledgeArticle)
class KnowledgeArticleAdmin(ReadOnlyAdmin):
    list_display = ["slug", "title"]
    search_fields = ["slug", "title", "body"]


@admin.register(Outage)
class OutageAdmin(ReadOnlyAdmin):
    list_display = ["operation", "subject", "refusals"]


@admin.register(RefusedCall)
class RefusedCallAdmin(ReadOnlyAdmin):
    list_display = ["idempotency_key", "outage", "attempts"]
    list_select_related = ["outage"]
