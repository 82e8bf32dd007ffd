from __future__ import annotations

from django.db import models
from django.utils.text import slugify

from agentforge_core.fields import EncryptedTextField
from agentforge_core.models import (
    HeldToActiveOrg,
    LegacyRecordModel,
    ScopedQuerySet,
    TimestampedModel,
    apply_org_scope,
    legacy_uuid,
)


class AuthProvider(models.TextChoices):
    LOCAL = "local"
    GOOGLE = "google"
    MICROSOFT = "microsoft"
    LDAP = "ldap"
    SAML = "saml"
    OIDC = "oidc"


class OrganizationManager(models.Manager.from_queryset(ScopedQuerySet)):
    """``Organization.objects``: the active organization only; raises when none is active.

    A join from here into tenant tables (``values_list("tools__credentials")``) is
    restricted to the active organization too. ``Organization.all_orgs`` lists them all.
    """

    def get_queryset(self):
        return apply_org_scope(super().get_queryset(), "pk")


class Organization(HeldToActiveOrg, LegacyRecordModel, TimestampedModel):
    """The tenant. Every scoped row points here; ``objects`` shows the active one only."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"
        DELETED = "deleted"

    class DirectorySource(models.TextChoices):
        INTERNAL = "internal"
        LDAP = "ldap"
        HR_API = "hr_api"
        HYBRID = "hybrid"

    name = models.CharField(max_length=255)
    slug = models.SlugField(max_length=100, unique=True)
    domain = models.CharField(max_length=255, null=True, blank=True)
    logo_url = models.TextField(null=True, blank=True)
    settings = models.JSONField(default=dict, blank=True, help_text="Free-form organization settings.")
    allowed_auth_providers = models.JSONField(default=list, blank=True)
    require_mfa = models.BooleanField(default=False)
    allowed_email_domains = models.JSONField(default=list, blank=True)
    google_client_id = models.CharField(max_length=255, null=True, blank=True)
    google_client_secret = EncryptedTextField(null=True, blank=True)
    microsoft_client_id = models.CharField(max_length=255, null=True, blank=True)
    microsoft_client_secret = EncryptedTextField(null=True, blank=True)
    microsoft_tenant_id = models.CharField(max_length=255, null=True, blank=True)
    max_users = models.IntegerField(default=100)
    max_agents = models.IntegerField(default=50)
    max_tools = models.IntegerField(default=100)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    directory_source = models.CharField(
        max_length=20, choices=DirectorySource.choices, default=DirectorySource.INTERNAL
    )
    hr_api_config = models.JSONField(null=True, blank=True)

    objects = OrganizationManager()
    all_orgs = models.Manager.from_queryset(ScopedQuerySet)()

    class Meta:
        db_table = "organizations"
        ordering = ["name"]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        if not self.slug:
            self.slug = slugify(self.name)[:100] or str(self.pk)[:8]
        super().save(*args, **kwargs)

    @classmethod
    def get_default(cls) -> "Organization":
        """The organization the JSON-era single-tenant install used (``org_default``)."""
        org = cls.all_orgs.filter(legacy_id="org_default").first()
        if org is None:
            org, _ = cls.all_orgs.get_or_create(
                id=legacy_uuid("organizations", "org_default"),
                defaults={"legacy_id": "org_default", "name": "Default Organization", "slug": "default"},
            )
        return org
