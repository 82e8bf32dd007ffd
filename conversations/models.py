"""Conversations, their messages and attachments."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from agentforge_core.models import LegacyRecordModel, OrgOwnedModel, TimestampedModel, org_foreign_key, org_index

TEST_TITLE_PREFIX = "[TEST] "


class Conversation(LegacyRecordModel, OrgOwnedModel, TimestampedModel):
    org = org_foreign_key("conversations")
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.SET_NULL, null=True, blank=True, related_name="conversations"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="conversations"
    )
    title = models.CharField(max_length=500, default="New Conversation")
    access_cache = models.JSONField(null=True, blank=True, help_text="Derived cache; safe to discard.")

    class Meta:
        db_table = "conversations"
        ordering = ["-updated_at"]
        indexes = [org_index("conversations", "updated_at"), org_index("conversations", "agent")]

    def __str__(self):
        return self.title

    @property
    def is_test(self) -> bool:
        """Test/sandbox chats are marked only by their title prefix."""
        return self.title.startswith(TEST_TITLE_PREFIX)

    def add_message(self, role: str, content: str = "", **fields) -> Message:
        """Append a message (AgentForge's ``ConversationService.add_message``) at the next position,
        however many writers append at once, and move the conversation's ``updated_at``.

        The conversation's row is updated before the last position is read: the UPDATE takes
        its row lock (PostgreSQL, MariaDB) or the database's write lock (SQLite), so a second
        writer reads the position only after the first has committed its message. Another
        organization's conversation is not found (``Conversation.DoesNotExist``)."""
        now = timezone.now()
        with transaction.atomic():
            if not Conversation.objects.filter(pk=self.pk).update(updated_at=now):
                raise Conversation.DoesNotExist(f"no conversation {self.pk} in the active organization")
            last = Message.objects.filter(conversation=self).aggregate(last=models.Max("position"))["last"]
            message = Message.objects.create(
                conversation=self, role=role, content=content, position=0 if last is None else last + 1, **fields
            )
        self.updated_at = now
        return message


class Message(LegacyRecordModel, OrgOwnedModel):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        SYSTEM = "system"
        TOOL = "tool"

    org = org_foreign_key("messages")
    # Leads (conversation, created_at) below; a single-column index would only slow the writes.
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False)
    role = models.CharField(max_length=20, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    tool_calls = models.JSONField(default=list, blank=True)
    sources = models.JSONField(default=list, blank=True)
    position = models.PositiveIntegerField(default=0, help_text="Order within the conversation.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "messages"
        ordering = ["conversation", "position"]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="messages_conv_created_idx"),
            org_index("messages", "created_at"),
        ]

    def __str__(self):
        return f"{self.role}: {self.content[:60]}"


class Attachment(OrgOwnedModel, TimestampedModel):
    """A chat file. The JSON era kept none in structured form (only an "[Attached: ...]" suffix)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = org_foreign_key("attachments")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="attachments")
    message = models.ForeignKey(Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="attachments")
    filename = models.CharField(max_length=500, help_text="Stored name.")
    original_name = models.CharField(max_length=500, blank=True, default="")
    content_type = models.CharField(max_length=200, blank=True, default="")
    file_size = models.BigIntegerField(default=0)
    storage_path = models.TextField(blank=True, default="")

    class Meta:
        db_table = "attachments"
        indexes = [org_index("attachments", "conversation")]
