"""The one audit trail: django-auditlog's entry model, extended for AgentForge."""

from __future__ import annotations

from auditlog.models import AbstractLogEntry, LogEntryManager
from django.conf import settings
from django.db import models

from accounts.models import OrgScopedQuerySet
from accounts.tenancy import ALL_ORGS, OrgScopeError, current_org, unscoped


class AuditLogQuerySet(OrgScopedQuerySet):
    pass


class AuditLogManager(LogEntryManager.from_queryset(AuditLogQuerySet)):
    """Reads are organization-scoped and fail closed; auditlog's writers run unscoped."""

    def get_queryset(self):
        queryset = super().get_queryset()
        active = current_org()
        if active is None:
            raise OrgScopeError("AuditLog.objects used with no active organization (use AuditLog.all_orgs)")
        return queryset if active is ALL_ORGS else queryset.filter(org_id=active)

    def log_create(self, instance, force_log: bool = False, **kwargs):
        with unscoped():
            return super().log_create(instance, force_log=force_log, **kwargs)

    def log_m2m_changes(self, *args, **kwargs):
        with unscoped():
            return super().log_m2m_changes(*args, **kwargs)


class AuditLog(AbstractLogEntry):
    """Legacy entries, authentication events and model changes, append-only and hash-chained."""

    org = models.ForeignKey(
        "accounts.Organization",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="audit_logs",
        db_column="org_id",
    )
    # Auth events and imported legacy entries concern no model row.
    content_type = models.ForeignKey(
        "contenttypes.ContentType", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    object_pk = models.CharField(max_length=255, blank=True, default="", db_index=True)
    object_repr = models.TextField(blank=True, default="")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_column="user_id",
        verbose_name="actor",
    )
    timestamp = models.DateTimeField(db_column="created_at", db_index=True, verbose_name="time")
    legacy_id = models.CharField(max_length=128, null=True, blank=True, unique=True, editable=False)
    legacy_user_id = models.CharField(
        max_length=128, null=True, blank=True, help_text="Acting user's legacy id, kept even if it dangles."
    )
    legacy_action = models.CharField(
        max_length=40, blank=True, default="", db_index=True, help_text="AgentForge action name (login, create, ...)."
    )
    resource_type = models.CharField(max_length=40, blank=True, default="")
    resource_id = models.CharField(max_length=255, null=True, blank=True)
    resource_name = models.TextField(null=True, blank=True)
    user_name = models.CharField(max_length=255, blank=True, default="")
    user_agent = models.TextField(null=True, blank=True)
    session_id = models.CharField(max_length=128, null=True, blank=True, help_text="Not a foreign key: legacy sessions were never stored.")
    request_id = models.CharField(max_length=128, null=True, blank=True)
    request_path = models.TextField(null=True, blank=True)
    request_method = models.CharField(max_length=10, null=True, blank=True)
    success = models.BooleanField(default=True)
    error_message = models.TextField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
    entry_hash = models.CharField(max_length=64, blank=True, default="", editable=False)

    objects = AuditLogManager()
    all_orgs = LogEntryManager.from_queryset(AuditLogQuerySet)()

    class Meta(AbstractLogEntry.Meta):
        db_table = "audit_logs"
        verbose_name = "audit log entry"
        verbose_name_plural = "audit logs"
        ordering = ["-timestamp"]
        indexes = [
            models.Index(fields=["actor", "timestamp"], name="audit_logs_user_created_idx"),
            models.Index(fields=["org", "timestamp"], name="audit_logs_org_created_idx"),
            models.Index(fields=["org", "legacy_action"], name="audit_logs_org_action_idx"),
        ]
