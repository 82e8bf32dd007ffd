"""Agents, their versions and tools, and tool access rules."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from accounts.models import LegacyRecordModel, OrgOwnedModel, TimestampedModel, org_foreign_key, org_index
from security.fields import EncryptedJSONField


class Tool(LegacyRecordModel, OrgOwnedModel, TimestampedModel):
    class Type(models.TextChoices):
        KNOWLEDGE = "knowledge"
        DOCUMENT = "document"
        WEBSITE = "website"
        API = "api"
        DATABASE = "database"
        EMAIL = "email"
        WEBHOOK = "webhook"
        SLACK = "slack"
        WEBSEARCH = "websearch"
        CALENDAR = "calendar"

    class AccessType(models.TextChoices):
        OWNER_ONLY = "owner_only"
        AUTHENTICATED = "authenticated"
        SPECIFIC_USERS = "specific_users"
        PUBLIC = "public"

    # Keys whose values are credentials wherever they appear in config, api_config
    # or kb_config. They live encrypted in ``credentials``, keyed by their path.
    SECRET_KEYS = frozenset(
        {
            "auth_value", "api_key", "apiKey", "smtp_pass", "password", "app_password", "bot_token",
            "webhook_url", "access_token", "refresh_token", "connection_string", "pinecone_api_key",
            "token", "secret", "client_secret",
        }
    )

    org = org_foreign_key("tools")
    type = models.CharField(max_length=30, choices=Type.choices)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    config = models.JSONField(default=dict, blank=True, help_text="Type-specific settings, without secrets.")
    api_config = models.JSONField(null=True, blank=True)
    kb_config = models.JSONField(null=True, blank=True)
    credentials = EncryptedJSONField(
        default=dict, blank=True, help_text="Secrets taken out of the configs, keyed by their path."
    )
    is_active = models.BooleanField(default=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="owned_tools"
    )
    system_owned = models.BooleanField(default=False, help_text='Legacy owner_id "system".')
    access_type = models.CharField(max_length=20, choices=AccessType.choices, default=AccessType.OWNER_ONLY)
    allowed_user_ids = models.JSONField(default=list, blank=True)
    allowed_group_ids = models.JSONField(default=list, blank=True)
    can_edit_user_ids = models.JSONField(default=list, blank=True)
    can_delete_user_ids = models.JSONField(default=list, blank=True)
    can_execute_user_ids = models.JSONField(default=list, blank=True)

    class Meta:
        db_table = "tools"
        ordering = ["name"]
        indexes = [org_index("tools", "type"), org_index("tools", "name")]

    def __str__(self):
        return self.name


class ToolPermission(LegacyRecordModel, OrgOwnedModel, TimestampedModel):
    org = org_foreign_key("tool_permissions")
    tool = models.ForeignKey(Tool, on_delete=models.CASCADE, null=True, blank=True, related_name="permissions")
    # AgentForge's permission endpoint never sets it: real files hold null.
    tool_name = models.CharField(max_length=255, null=True, blank=True, default=None)
    role_ids = models.JSONField(default=list, blank=True)
    user_ids = models.JSONField(default=list, blank=True)
    group_ids = models.JSONField(default=list, blank=True)
    can_view = models.BooleanField(default=True)
    can_execute = models.BooleanField(default=True)
    can_edit = models.BooleanField(default=False)
    can_delete = models.BooleanField(default=False)
    allowed_actions = models.JSONField(default=list, blank=True)
    denied_actions = models.JSONField(default=list, blank=True)
    rate_limit_per_hour = models.IntegerField(null=True, blank=True)
    rate_limit_per_day = models.IntegerField(null=True, blank=True)
    allowed_hours_start = models.SmallIntegerField(null=True, blank=True)
    allowed_hours_end = models.SmallIntegerField(null=True, blank=True)
    allowed_days = models.JSONField(default=list, blank=True)
    allowed_ips = models.JSONField(default=list, blank=True)
    denied_ips = models.JSONField(default=list, blank=True)
    data_scope = models.JSONField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        db_table = "tool_permissions"
        indexes = [org_index("tool_permissions", "tool")]


class Agent(LegacyRecordModel, OrgOwnedModel, TimestampedModel):
    class Status(models.TextChoices):
        DRAFT = "draft"
        PUBLISHED = "published"

    class AgentType(models.TextChoices):
        CONVERSATIONAL = "conversational"
        PROCESS = "process"

    org = org_foreign_key("agents")
    name = models.CharField(max_length=255)
    icon = models.CharField(max_length=32, blank=True, default="\U0001f916")
    goal = models.TextField(blank=True, default="")
    agent_type = models.CharField(max_length=20, choices=AgentType.choices, default=AgentType.CONVERSATIONAL)
    personality = models.JSONField(default=dict, blank=True)
    guardrails = models.JSONField(default=dict, blank=True)
    tasks = models.JSONField(default=list, blank=True)
    model_id = models.CharField(max_length=100, blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    is_active = models.BooleanField(default=True)
    memory = models.JSONField(default=list, blank=True)
    memory_enabled = models.BooleanField(default=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="owned_agents"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    process_definition = models.JSONField(null=True, blank=True)
    process_settings = models.JSONField(null=True, blank=True)
    tools = models.ManyToManyField(Tool, through="AgentTool", related_name="agents", blank=True)

    class Meta:
        db_table = "agents"
        ordering = ["name"]
        indexes = [org_index("agents", "status"), org_index("agents", "updated_at")]

    def __str__(self):
        return self.name


class AgentVersion(OrgOwnedModel):
    """A snapshot of an agent's definition (no legacy source: the JSON era had no versions)."""

    org = org_foreign_key("+")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    snapshot = models.JSONField(default=dict)
    comment = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "agent_versions"
        ordering = ["agent", "-version"]
        constraints = [models.UniqueConstraint(fields=["agent", "version"], name="agent_versions_uniq")]
        indexes = [org_index("agent_versions", "agent")]


class AgentTool(OrgOwnedModel):
    """One entry of an agent's legacy ``tool_ids`` list, in order.

    ``tool_ref`` keeps the string as written (an ``api:``/``kb:`` prefix, or an id that
    no longer resolves, in which case ``tool`` is null).
    """

    org = org_foreign_key("+")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="agent_tools")
    tool = models.ForeignKey(Tool, on_delete=models.CASCADE, null=True, blank=True, related_name="agent_tools")
    tool_ref = models.CharField(max_length=160)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "agent_tools"
        ordering = ["agent", "position"]
        constraints = [models.UniqueConstraint(fields=["agent", "position"], name="agent_tools_uniq")]
        indexes = [org_index("agent_tools", "agent"), models.Index(fields=["tool"], name="agent_tools_tool_idx")]
