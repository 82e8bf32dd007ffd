"""External identity providers: OAuth apps and LDAP directories."""

from __future__ import annotations

from django.db import models

from accounts.models import AuthProvider
from agentforge_core.fields import EncryptedTextField
from agentforge_core.models import LegacyRecordModel, OrgOwnedModel, TimestampedModel, org_foreign_key, org_index


class OAuthConfig(LegacyRecordModel, OrgOwnedModel, TimestampedModel):
    org = org_foreign_key("oauth_configs")
    provider = models.CharField(max_length=20, choices=AuthProvider.choices)
    client_id = models.CharField(max_length=255, blank=True, default="")
    client_secret = EncryptedTextField(null=True, blank=True)
    tenant_id = models.CharField(max_length=255, null=True, blank=True)
    scopes = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    auto_create_users = models.BooleanField(default=True)
    update_profile_on_login = models.BooleanField(default=True)
    default_role = models.ForeignKey(
        "accounts.Role", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    allowed_domains = models.JSONField(default=list, blank=True)

    class Meta:
        db_table = "oauth_configs"
        verbose_name = "OAuth config"
        indexes = [org_index("oauth_configs", "provider")]

    def __str__(self):
        return f"{self.get_provider_display()} ({self.client_id})"


class LDAPConfig(LegacyRecordModel, OrgOwnedModel, TimestampedModel):
    class ConnectionStatus(models.TextChoices):
        CONNECTED = "connected"
        ERROR = "error"
        UNKNOWN = "unknown"

    org = org_foreign_key("ldap_configs")
    is_org_directory = models.BooleanField(
        default=False, help_text="The directory named by the organization's ldap_config_id."
    )
    name = models.CharField(max_length=255, default="LDAP")
    server_url = models.CharField(max_length=500, blank=True, default="")
    use_ssl = models.BooleanField(default=False)
    use_tls = models.BooleanField(default=False)
    verify_ssl = models.BooleanField(default=True)
    connection_timeout = models.IntegerField(default=10)
    bind_dn = models.CharField(max_length=500, blank=True, default="")
    bind_password = EncryptedTextField(null=True, blank=True)
    base_dn = models.CharField(max_length=500, blank=True, default="")
    user_search_filter = models.CharField(max_length=500, default="(uid={username})")
    user_search_base = models.CharField(max_length=500, null=True, blank=True)
    user_object_class = models.CharField(max_length=100, blank=True, default="")
    group_search_filter = models.CharField(max_length=500, null=True, blank=True)
    group_search_base = models.CharField(max_length=500, null=True, blank=True)
    group_object_class = models.CharField(max_length=100, blank=True, default="")
    attribute_mapping = models.JSONField(default=dict, blank=True)
    group_role_mapping = models.JSONField(default=dict, blank=True)
    default_role = models.ForeignKey(
        "accounts.Role", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    sync_enabled = models.BooleanField(default=False)
    sync_interval_hours = models.IntegerField(default=24)
    sync_delete_removed = models.BooleanField(default=False)
    sync_update_existing = models.BooleanField(default=True)
    last_sync = models.DateTimeField(null=True, blank=True)
    last_sync_status = models.CharField(max_length=100, null=True, blank=True)
    last_sync_users_synced = models.IntegerField(default=0)
    is_active = models.BooleanField(default=True)
    connection_status = models.CharField(
        max_length=20, choices=ConnectionStatus.choices, default=ConnectionStatus.UNKNOWN
    )
    last_connection_test = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "ldap_configs"
        verbose_name = "LDAP config"
        indexes = [org_index("ldap_configs", "is_active")]

    def __str__(self):
        return self.name
