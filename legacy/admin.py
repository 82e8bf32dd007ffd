"""Admin for legacy records kept verbatim from the JSON era (read-only)."""

from __future__ import annotations

from django.contrib import admin

from agentforge_site.admin.display import json_block, truncate
from agentforge_site.admin.scoping import OrgScopedAdmin, is_superuser
from legacy.models import LegacyRecord


@admin.register(LegacyRecord)
class LegacyRecordAdmin(OrgScopedAdmin):
    """Imported verbatim and written back by export_json: viewable, never edited here."""

    list_display = ("collection", "legacy_id", "org", "summary", "imported_at")
    list_select_related = ("org",)
    list_filter = ("collection", "imported_at")
    search_fields = ("=legacy_id", "collection")
    ordering = ("collection", "legacy_id")
    fields = ("org", "collection", "legacy_id", "imported_at", "data_pretty")
    readonly_fields = fields

    @admin.display(description="data")
    def summary(self, obj):
        data = obj.data if isinstance(obj.data, dict) else {}
        label = data.get("name") or data.get("title") or data.get("email") or ", ".join(sorted(data)[:5])
        return truncate(label, 60)

    @admin.display(description="data")
    def data_pretty(self, obj):
        return json_block(obj.data)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return is_superuser(request)
