"""Agents, their versions and tools, and tool access rules."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from agentforge_core.fields import EncryptedJSONField
from agentforge_core.models import (
    AllOrgsManager,
    LegacyRecordModel,
    OrgOwnedModel,
    OrgScopedManager,
    OrgScopedQuerySet,
    TimestampedModel,
    org_foreign_key,
    org_index,
)
from agentforge_core.tenancy import current_org_id
from agentforge_site.caching import cached

# Credentials wherever they appear in a tool's config, api_config or kb_config; and the
# header names that carry one in a ``headers`` object.
SECRET_KEYS = frozenset(
    {
        "auth_value",
        "api_key",
        "apiKey",
        "smtp_pass",
        "password",
        "app_password",
        "bot_token",
        "webhook_url",
        "access_token",
        "refresh_token",
        "connection_string",
        "pinecone_api_key",
        "token",
        "secret",
        "client_secret",
    }
)
HEADER_SECRETS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"})
CONFIG_FIELDS = ("config", "api_config", "kb_config")


def extract_secrets(obj: dict, path: str, creds: dict, in_headers=False) -> dict:
    """A copy of ``obj`` without credentials; they go to ``creds`` keyed by dotted path."""
    out = {}
    for key, value in obj.items():
        here = f"{path}.{key}"
        if isinstance(value, dict):
            out[key] = extract_secrets(value, here, creds, in_headers=(key == "headers"))
        elif (
            isinstance(value, str) and value and (key in SECRET_KEYS or (in_headers and key.lower() in HEADER_SECRETS))
        ):
            creds[here] = value
        else:
            out[key] = value
    return out


def merge_secrets(configs: dict, creds: dict) -> None:
    """Put the credentials back at their paths in ``configs`` (the legacy form)."""
    for path, value in (creds or {}).items():
        parts = path.split(".")
        target = configs.get(parts[0])
        if not isinstance(target, dict):
            continue
        for part in parts[1:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value


class ToolQuerySet(OrgScopedQuerySet):
    """Every write path moves credentials out of the configs, as ``Tool.save`` does."""

    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        for tool in objs:
            tool.move_secrets()
        return super().bulk_create(objs, *args, **kwargs)

    def bulk_update(self, objs, fields, *args, **kwargs):
        objs = list(objs)
        if any(name in CONFIG_FIELDS for name in fields):
            for tool in objs:
                if tool.move_secrets() and "credentials" not in fields:
                    fields = [*fields, "credentials"]
        return super().bulk_update(objs, fields, *args, **kwargs)

    def update(self, **kwargs):
        # One value for many rows cannot be split per row: refuse rather than store it in clear.
        for name in CONFIG_FIELDS:
            value = kwargs.get(name)
            if isinstance(value, dict):
                creds = {}
                extract_secrets(value, name, creds)
                if creds:
                    raise ValueError(
                        f"tools.{name}: {', '.join(sorted(creds))} would be stored in clear; "
                        "save each tool instead (the credentials move into the encrypted column)"
                    )
        return super().update(**kwargs)

    update.alters_data = True


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

    # Credentials found in config, api_config or kb_config live encrypted in
    # ``credentials``, keyed by their path (``api_config.auth_value``).
    SECRET_KEYS = SECRET_KEYS

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

    objects = OrgScopedManager.from_queryset(ToolQuerySet)()
    all_orgs = AllOrgsManager.from_queryset(ToolQuerySet)()

    def __str__(self):
        return self.name

    def move_secrets(self) -> bool:
        """Move credentials typed into the configs (admin, ORM, API) into ``credentials``;
        True when some moved. A credential already stored under the same path is replaced."""
        moved = {}
        for name in CONFIG_FIELDS:
            value = getattr(self, name)
            if isinstance(value, dict):
                creds = {}
                cleaned = extract_secrets(value, name, creds)
                if creds:
                    setattr(self, name, cleaned)
                    moved.update(creds)
        if moved:
            self.credentials = {**(self.credentials or {}), **moved}
        return bool(moved)

    def save(self, *args, **kwargs):
        # Before the audit trail compares old and new values (pre_save), so the diff never
        # holds a credential either.
        if self.move_secrets() and kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], *CONFIG_FIELDS, "credentials"}
        super().save(*args, **kwargs)


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
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions", db_index=False)
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
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="agent_tools", db_index=False)
    tool = models.ForeignKey(
        Tool, on_delete=models.CASCADE, null=True, blank=True, related_name="agent_tools", db_index=False
    )
    tool_ref = models.CharField(max_length=160)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "agent_tools"
        ordering = ["agent", "position"]
        constraints = [models.UniqueConstraint(fields=["agent", "position"], name="agent_tools_uniq")]
        indexes = [org_index("agent_tools", "agent"), models.Index(fields=["tool"], name="agent_tools_tool_idx")]


def agent_for_chat(agent_id) -> Agent:
    """The active organization's agent, with its tools in order as ``agent.chat_tools``.

    Read on every chat turn and rarely changed, so it is cached (per organization, until
    an agent, tool or link of the organization is written). The tools' credentials are
    deferred: they are never cached, and are read, decrypted, only when used.
    """

    def load():
        agent = Agent.objects.get(pk=agent_id)
        links = (
            AgentTool.objects.filter(agent=agent, tool__isnull=False)
            .select_related("tool")
            .defer("tool__credentials")
            .order_by("position")
        )
        agent.chat_tools = [link.tool for link in links]
        return agent

    return cached("agent_for_chat", current_org_id(), load, agent_id)
