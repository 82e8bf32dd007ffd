"""API keys: only a visible prefix and the SHA-256 of the key are stored."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import OrgOwnedModel, OrgScopedManager, AllOrgsManager, OrgScopedQuerySet, org_foreign_key, org_index


class APIKeyQuerySet(OrgScopedQuerySet):
    def active(self):
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class APIKeyManager(OrgScopedManager.from_queryset(APIKeyQuerySet)):
    pass


class AllOrgsAPIKeyManager(AllOrgsManager.from_queryset(APIKeyQuerySet)):
    pass


class APIKey(OrgOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = org_foreign_key("api_keys")
    name = models.CharField(max_length=255)
    prefix = models.CharField(max_length=32, db_index=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="api_keys"
    )
    scopes = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = APIKeyManager()
    all_orgs = AllOrgsAPIKeyManager()

    class Meta:
        db_table = "api_keys"
        verbose_name = "API key"
        ordering = ["-created_at"]
        indexes = [org_index("api_keys", "created_at")]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()
