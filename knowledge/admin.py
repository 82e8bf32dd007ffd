"""Admin for knowledge-base documents (with chunk counts) and their chunks."""

from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat

from agentforge_site.admin.display import count_subquery, json_block, truncate
from agentforge_site.admin.mixins import ReadOnlyAdminMixin
from agentforge_site.admin.scoping import OrgScopedAdmin
from knowledge.models import Document, DocumentChunk, VectorSet


@admin.register(Document)
class DocumentAdmin(OrgScopedAdmin):
    list_display = ("label", "org", "tool", "source", "file_type", "size", "status", "chunk_count", "created_at")
    list_select_related = ("org", "tool")
    list_filter = ("status", "source", "file_type", "tool")
    search_fields = ("original_name", "title", "url", "filename", "legacy_id")
    autocomplete_fields = ("tool",)
    readonly_fields = ("chunk_count", "legacy_id", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("org", "tool", "source", "status", "error_message", "chunk_count")}),
        ("File", {"fields": ("original_name", "filename", "file_type", "file_size")}),
        ("Web page", {"fields": ("url", "title")}),
        ("Content", {"fields": ("content",), "classes": ("collapse",)}),
        ("Record", {"fields": ("legacy_id", "created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_chunks=count_subquery(DocumentChunk, "document"))

    @admin.display(description="document", ordering="original_name")
    def label(self, obj):
        return truncate(str(obj), 70)

    @admin.display(description="size", ordering="file_size")
    def size(self, obj):
        return filesizeformat(obj.file_size) if obj.file_size else "—"

    @admin.display(description="chunks", ordering="_chunks")
    def chunk_count(self, obj):
        return getattr(obj, "_chunks", None) if obj and obj.pk else 0


@admin.register(DocumentChunk)
class DocumentChunkAdmin(OrgScopedAdmin):
    list_display = (
        "chunk_id",
        "document",
        "org",
        "tool",
        "chunk_type",
        "is_table",
        "preview",
        "embedding_dim",
        "embedding_model",
    )
    list_select_related = ("document", "org", "tool")
    list_filter = ("chunk_type", "is_table", "in_index", "embedding_model")
    search_fields = ("chunk_id", "text", "document__original_name")
    autocomplete_fields = ("document", "tool")
    exclude = ("embedding",)
    readonly_fields = ("embedding_summary", "table_pretty", "created_at", "legacy_id")

    @admin.display(description="text")
    def preview(self, obj):
        return truncate(obj.text, 80)

    @admin.display(description="embedding")
    def embedding_summary(self, obj):
        if obj is None or obj.embedding is None:
            return "—"
        return f"{obj.embedding_dim or '?'} floats ({obj.embedding_model or 'unknown model'})"

    @admin.display(description="table data")
    def table_pretty(self, obj):
        return json_block(obj.table_data)


@admin.register(VectorSet)
class VectorSetAdmin(ReadOnlyAdminMixin, OrgScopedAdmin):
    """The vector families of an organization: written only by set_embeddings, shown for operators."""

    list_display = ("__str__", "org", "embedding_model", "tool_key", "dimension", "version", "updated_at")
    list_select_related = ("org",)
    search_fields = ("embedding_model", "tool_key")
