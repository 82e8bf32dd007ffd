"""Admin for conversations (with a read-only transcript), messages and attachments."""

from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html, format_html_join

from agentforge_site.admin.display import count_subquery, truncate
from agentforge_site.admin.scoping import OrgScopedAdmin
from conversations.models import Attachment, Conversation, Message


class TestConversationFilter(admin.SimpleListFilter):
    title = "test chats"
    parameter_name = "test"

    def lookups(self, request, model_admin):
        return (("yes", "Test chats only"), ("no", "Real chats only"))

    def queryset(self, request, queryset):
        from conversations.models import TEST_TITLE_PREFIX

        if self.value() == "yes":
            return queryset.filter(title__startswith=TEST_TITLE_PREFIX)
        if self.value() == "no":
            return queryset.exclude(title__startswith=TEST_TITLE_PREFIX)
        return queryset


@admin.register(Conversation)
class ConversationAdmin(OrgScopedAdmin):
    list_display = ("title", "org", "agent", "user", "message_count", "updated_at")
    list_select_related = ("org", "agent", "user")
    list_filter = (TestConversationFilter, "agent", "updated_at")
    search_fields = ("title", "user__email", "agent__name", "legacy_id")
    autocomplete_fields = ("agent", "user")
    readonly_fields = ("transcript", "legacy_id", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("org", "title", "agent", "user")}),
        ("Transcript", {"fields": ("transcript",)}),
        ("Record", {"fields": ("legacy_id", "created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_messages=count_subquery(Message, "conversation"))

    @admin.display(description="messages", ordering="_messages")
    def message_count(self, obj):
        return obj._messages

    @admin.display(description="transcript")
    def transcript(self, obj):
        """The messages in order, read-only, escaped."""
        if obj is None or obj.pk is None:
            return "—"
        # The scoped manager: a message of another organization linked to this conversation
        # (planted around the checks) is not this organization's to read.
        messages = Message.objects.filter(conversation=obj).order_by("position", "created_at")
        rows = format_html_join(
            "",
            '<div class="af-msg af-msg-{}"><div class="af-msg-head"><strong>{}</strong> <span>{}</span></div>'
            '<div class="af-msg-body">{}</div>{}</div>',
            (
                (
                    m.role,
                    m.get_role_display(),
                    m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    m.content,
                    format_html('<div class="af-msg-meta">{} tool call(s)</div>', len(m.tool_calls))
                    if m.tool_calls
                    else "",
                )
                for m in messages
            ),
        )
        return format_html('<div class="af-transcript">{}</div>', rows) if rows else "No messages."


@admin.register(Message)
class MessageAdmin(OrgScopedAdmin):
    list_display = ("short", "conversation", "org", "role", "position", "created_at")
    list_select_related = ("conversation", "org")
    list_filter = ("role", "created_at")
    search_fields = ("content", "conversation__title", "legacy_id")
    autocomplete_fields = ("conversation",)
    readonly_fields = ("legacy_id",)

    @admin.display(description="message")
    def short(self, obj):
        return truncate(obj.content, 90)


@admin.register(Attachment)
class AttachmentAdmin(OrgScopedAdmin):
    list_display = ("label", "conversation", "org", "content_type", "size", "created_at")
    list_select_related = ("conversation", "org")
    list_filter = ("content_type",)
    search_fields = ("original_name", "filename")
    autocomplete_fields = ("conversation", "message")
    readonly_fields = ("created_at", "updated_at")

    @admin.display(description="file", ordering="original_name")
    def label(self, obj):
        return obj.original_name or obj.filename

    @admin.display(description="size", ordering="file_size")
    def size(self, obj):
        return filesizeformat(obj.file_size)
