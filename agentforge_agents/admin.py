"""Admin for agents (with their versions and tools), tools (credentials masked) and tool rules."""

from __future__ import annotations

from django.contrib import admin

from agentforge_agents.models import Agent, AgentTool, AgentVersion, Tool, ToolPermission
from agentforge_site.admin.display import count_subquery, json_block
from agentforge_site.admin.mixins import CreatedByAdminMixin, ReadOnlyAdminMixin, ReadOnlyInlineMixin, SecretFieldsMixin
from agentforge_site.admin.scoping import OrgScopedAdmin, ScopedTabularInline


@admin.register(Tool)
class ToolAdmin(SecretFieldsMixin, OrgScopedAdmin):
    list_display = (
        "name",
        "type",
        "org",
        "is_active",
        "access_type",
        "owner",
        "agent_count",
        "credential_keys",
        "updated_at",
    )
    list_select_related = ("org", "owner")
    list_filter = ("type", "is_active", "access_type", "system_owned")
    search_fields = ("name", "description", "legacy_id")
    autocomplete_fields = ("owner",)
    readonly_fields = ("legacy_id", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("org", "name", "type", "description", "is_active")}),
        ("Configuration", {"fields": ("config", "api_config", "kb_config")}),
        (
            "Credentials",
            {
                "fields": ("credentials",),
                "description": "Secrets are write-only: values are never shown; leave a value blank to keep it.",
            },
        ),
        (
            "Access",
            {
                "fields": (
                    "owner",
                    "system_owned",
                    "access_type",
                    "allowed_user_ids",
                    "allowed_group_ids",
                    "can_edit_user_ids",
                    "can_delete_user_ids",
                    "can_execute_user_ids",
                )
            },
        ),
        ("Record", {"fields": ("legacy_id", "created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_agents=count_subquery(AgentTool, "tool"))

    @admin.display(description="agents", ordering="_agents")
    def agent_count(self, obj):
        return obj._agents

    @admin.display(description="credentials")
    def credential_keys(self, obj):
        keys = sorted((obj.credentials or {}).keys()) if isinstance(obj.credentials, dict) else []
        return f"{len(keys)} key(s): {', '.join(keys)}" if keys else "—"


class AgentVersionInline(ReadOnlyInlineMixin, ScopedTabularInline):
    model = AgentVersion
    fields = ("version", "comment", "created_by", "created_at")
    readonly_fields = fields
    ordering = ("-version",)
    show_change_link = True


class AgentToolInline(ScopedTabularInline):
    model = AgentTool
    fields = ("position", "tool", "tool_ref")
    autocomplete_fields = ("tool",)
    ordering = ("position",)
    extra = 0


@admin.register(Agent)
class AgentAdmin(CreatedByAdminMixin, OrgScopedAdmin):
    list_display = (
        "icon_name",
        "org",
        "agent_type",
        "status",
        "is_active",
        "model_id",
        "owner",
        "tool_count",
        "version_count",
        "updated_at",
    )
    list_display_links = ("icon_name",)
    list_select_related = ("org", "owner")
    list_filter = ("status", "agent_type", "is_active", "memory_enabled")
    search_fields = ("name", "goal", "model_id", "legacy_id")
    autocomplete_fields = ("owner", "created_by")
    readonly_fields = ("legacy_id", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("org", "name", "icon", "goal", "agent_type", "status", "is_active", "model_id")}),
        ("Behaviour", {"fields": ("personality", "guardrails", "tasks")}),
        ("Memory", {"fields": ("memory_enabled", "memory"), "classes": ("collapse",)}),
        ("Process", {"fields": ("process_definition", "process_settings"), "classes": ("collapse",)}),
        ("Ownership", {"fields": ("owner", "created_by")}),
        ("Record", {"fields": ("legacy_id", "created_at", "updated_at"), "classes": ("collapse",)}),
    )
    inlines = (AgentToolInline, AgentVersionInline)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_tools=count_subquery(AgentTool, "agent"), _versions=count_subquery(AgentVersion, "agent"))
        )

    @admin.display(description="agent", ordering="name")
    def icon_name(self, obj):
        return f"{obj.icon} {obj.name}".strip()

    @admin.display(description="tools", ordering="_tools")
    def tool_count(self, obj):
        return obj._tools

    @admin.display(description="versions", ordering="_versions")
    def version_count(self, obj):
        return obj._versions


@admin.register(AgentVersion)
class AgentVersionAdmin(ReadOnlyAdminMixin, OrgScopedAdmin):
    """Snapshots are history: read-only."""

    list_display = ("agent", "version", "org", "comment", "created_by", "created_at")
    list_select_related = ("agent", "org", "created_by")
    search_fields = ("agent__name", "comment")
    fields = ("org", "agent", "version", "comment", "created_by", "created_at", "snapshot_pretty")
    readonly_fields = fields

    @admin.display(description="snapshot")
    def snapshot_pretty(self, obj):
        return json_block(obj.snapshot)


@admin.register(ToolPermission)
class ToolPermissionAdmin(OrgScopedAdmin):
    list_display = (
        "tool_label",
        "org",
        "can_view",
        "can_execute",
        "can_edit",
        "can_delete",
        "rate_limit_per_hour",
        "rate_limit_per_day",
    )
    list_select_related = ("org", "tool")
    list_filter = ("can_execute", "can_edit", "can_delete")
    search_fields = ("tool_name", "tool__name")
    autocomplete_fields = ("tool", "created_by")
    readonly_fields = ("legacy_id", "created_at", "updated_at")

    @admin.display(description="tool", ordering="tool_name")
    def tool_label(self, obj):
        return obj.tool or obj.tool_name or "—"
