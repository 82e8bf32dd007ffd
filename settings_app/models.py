"""System-wide settings, per-organization settings and user preferences, as typed values."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone as dj_timezone

from agentforge_core import crypto
from agentforge_core.fields import EncryptedTextField
from agentforge_core.models import OrgOwnedModel, WriteNotifyingQuerySet, org_foreign_key, org_index
from agentforge_site.caching import cached


class ValueType(models.TextChoices):
    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    JSON = "json"
    SECRET = "secret"


def infer_value_type(value) -> str:
    if isinstance(value, bool):
        return ValueType.BOOLEAN
    if isinstance(value, int):
        return ValueType.INTEGER
    if isinstance(value, float):
        return ValueType.FLOAT
    if isinstance(value, str):
        return ValueType.STRING
    return ValueType.JSON


class TypedSetting(models.Model):
    """A key with a typed value; a secret's value lives only in ``secret_value``, encrypted."""

    key = models.CharField(max_length=191)
    value_type = models.CharField(max_length=10, choices=ValueType.choices, default=ValueType.STRING)
    value = models.JSONField(null=True, blank=True)
    is_secret = models.BooleanField(default=False)
    # Provider API keys (LLM, embedding, vector DB, AWS) use AES-256-GCM (docs/security.md).
    secret_value = EncryptedTextField(null=True, blank=True, scheme=crypto.AESGCM_SCHEME)
    description = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(default=dj_timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        abstract = True

    def __str__(self):
        return self.key

    def get_value(self):
        return self.secret_value if self.is_secret else self.value

    def set_value(self, value, secret: bool | None = None) -> None:
        if secret is not None:
            self.is_secret = secret
        if self.is_secret:
            self.value_type = ValueType.SECRET
            self.secret_value = "" if value is None else str(value)
            self.value = None
        else:
            self.value_type = infer_value_type(value)
            self.value = value
            self.secret_value = None

    def save(self, *args, **kwargs):
        self.updated_at = dj_timezone.now()
        super().save(*args, **kwargs)


class SystemSetting(TypedSetting):
    """Global settings: the legacy top-level settings.json (flattened), integrations, tenancy mode."""

    objects = models.Manager.from_queryset(WriteNotifyingQuerySet)()

    class Meta:
        db_table = "system_settings"
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["key"], name="system_settings_key_uniq")]


class OrgSetting(TypedSetting, OrgOwnedModel):
    """Per-organization settings: the legacy security/settings.json, one row per key."""

    org = org_foreign_key("org_settings")

    class Meta:
        db_table = "org_settings"
        ordering = ["org", "key"]
        constraints = [models.UniqueConstraint(fields=["org", "key"], name="org_settings_org_key_uniq")]


class UserPreference(OrgOwnedModel):
    org = org_foreign_key("+")
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preferences")
    timezone = models.CharField(max_length=64, default="UTC")
    language = models.CharField(max_length=16, default="en")
    custom_attributes = models.JSONField(default=dict, blank=True)
    preferences = models.JSONField(default=dict, blank=True, help_text="Free-form UI preferences.")
    updated_at = models.DateTimeField(default=dj_timezone.now)

    class Meta:
        db_table = "user_preferences"
        indexes = [org_index("user_preferences", "user")]


def org_setting_values(org_id) -> dict:
    """The organization's settings as ``{key: value}``, secrets left out; cached.

    Read on every sign-in, password change and API-key creation (``security.*``).
    """

    def load():
        rows = OrgSetting.all_orgs.filter(org_id=org_id, is_secret=False).values_list("key", "value")
        return dict(rows)

    return cached("org_settings", org_id, load)


def system_setting_values() -> dict:
    """The system settings as ``{key: value}``, secrets left out; cached."""
    return cached(
        "system_settings", None, lambda: dict(SystemSetting.objects.filter(is_secret=False).values_list("key", "value"))
    )
