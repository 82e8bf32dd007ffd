"""The one audit trail: django-auditlog's entry model, extended for AgentForge.

Entries are append-only: the ORM refuses updates and deletes (see ``security.audit`` for
the retention purge and for filling the hash chain of bulk-imported entries), and each
entry carries ``entry_hash`` = SHA-256 over its canonical content and ``prev_hash``, the
hash of the previous entry of the same organization (entries without an organization
form their own chain). ``AuditChainHead`` holds the tip of each chain and serialises
writers.
"""

from __future__ import annotations

from auditlog.models import AbstractLogEntry, LogEntryManager
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from agentforge_core.models import HeldToActiveOrg, OrgScopedQuerySet, apply_org_scope
from agentforge_core.tenancy import unscoped


class AuditLogImmutableError(Exception):
    """Audit entries are never updated or deleted through the ORM."""


class AuditLogQuerySet(OrgScopedQuerySet):
    def update(self, **kwargs):
        raise AuditLogImmutableError("audit log entries cannot be updated")

    def delete(self):
        raise AuditLogImmutableError("audit log entries cannot be deleted (retention: security.audit.purge_expired)")

    delete.alters_data = True
    delete.queryset_only = True

    def bulk_update(self, objs, fields, batch_size=None):
        raise AuditLogImmutableError("audit log entries cannot be updated")

    def bulk_create(self, objs, *args, **kwargs):
        """Insert entries hashed as they are written, each in its place in its chain."""
        from security.audit import bulk_append  # not at the top: security.audit imports these models

        return bulk_append(
            objs, lambda entries: super(AuditLogQuerySet, self).bulk_create(entries, *args, **kwargs), self.db
        )


class AuditLogManager(LogEntryManager.from_queryset(AuditLogQuerySet)):
    """Reads are organization-scoped and fail closed; auditlog's writers run unscoped."""

    def get_queryset(self):
        # Same rule as every tenant model: filtered inside a scope, failing when run without one.
        return apply_org_scope(super().get_queryset())

    def log_create(self, instance, force_log: bool = False, **kwargs):
        _describe(instance, kwargs)
        with unscoped():
            return super().log_create(instance, force_log=force_log, **kwargs)

    def log_m2m_changes(self, changed_queryset, instance, operation, field_name, **kwargs):
        _describe(instance, kwargs)
        with unscoped():
            return super().log_m2m_changes(changed_queryset, instance, operation, field_name, **kwargs)


def _describe(instance, kwargs) -> None:
    """Organization and legacy resource fields of an entry about ``instance``."""
    from security.audit import org_id_of, resource_type_of

    kwargs.setdefault("org_id", org_id_of(instance))
    kwargs.setdefault("resource_type", resource_type_of(type(instance)))
    if instance.pk is not None:
        kwargs.setdefault("resource_id", str(instance.pk))


class AllOrgsAuditLogManager(LogEntryManager.from_queryset(AuditLogQuerySet)):
    """Every organization's entries (system work, verification, the importer)."""


class AuditLog(HeldToActiveOrg, AbstractLogEntry):
    """Legacy entries, authentication events and model changes, append-only and hash-chained."""

    # Not real foreign-key constraints: entries outlive the users and organizations they
    # mention (deleting either must not rewrite history, and the PostgreSQL trigger would
    # refuse the SET NULL anyway). The id stays as written, so the hash stays valid.
    org = models.ForeignKey(
        "accounts.Organization",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="audit_logs",
        db_column="org_id",
        db_index=False,  # (org, timestamp), (org, legacy_action) and (org, id) lead with it
    )
    # Auth events and imported legacy entries concern no model row.
    content_type = models.ForeignKey(
        "contenttypes.ContentType", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Indexed in Meta.indexes rather than by db_index, which on PostgreSQL adds a second,
    # varchar_pattern_ops index for LIKE 'prefix%' that no query here uses: on the
    # busiest table of all, every index is paid for by every write.
    object_pk = models.CharField(max_length=255, blank=True, default="")
    cid = models.CharField(max_length=255, blank=True, null=True, verbose_name="Correlation ID")
    object_repr = models.TextField(blank=True, default="")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
        db_column="user_id",
        verbose_name="actor",
        db_index=False,  # (actor, timestamp) leads with it
    )
    timestamp = models.DateTimeField(default=timezone.now, db_column="created_at", db_index=True, verbose_name="time")
    legacy_id = models.CharField(max_length=128, null=True, blank=True, unique=True, editable=False)
    legacy_user_id = models.CharField(
        max_length=128, null=True, blank=True, help_text="Acting user's legacy id, kept even if it dangles."
    )
    legacy_action = models.CharField(
        max_length=40, blank=True, default="", help_text="AgentForge action name (login, create, ...)."
    )
    resource_type = models.CharField(max_length=40, blank=True, default="")
    resource_id = models.CharField(max_length=255, null=True, blank=True)
    resource_name = models.TextField(null=True, blank=True)
    user_name = models.CharField(max_length=255, blank=True, default="")
    user_agent = models.TextField(null=True, blank=True)
    session_id = models.CharField(
        max_length=128,
        null=True,
        blank=True,
        help_text="SHA-256 of the session key for new entries; legacy sessions were never stored (not a foreign key).",
    )
    request_id = models.CharField(max_length=128, null=True, blank=True)
    request_path = models.TextField(null=True, blank=True)
    request_method = models.CharField(max_length=10, null=True, blank=True)
    success = models.BooleanField(default=True)
    error_message = models.TextField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
    entry_hash = models.CharField(max_length=64, blank=True, default="", editable=False)

    objects = AuditLogManager()
    all_orgs = AllOrgsAuditLogManager()

    class Meta(AbstractLogEntry.Meta):
        db_table = "audit_logs"
        verbose_name = "audit log entry"
        verbose_name_plural = "audit logs"
        ordering = ["-timestamp"]
        # Django's internals (deletion collector, related lookups) use this one: it refuses too.
        base_manager_name = "all_orgs"
        indexes = [
            models.Index(fields=["actor", "timestamp"], name="audit_logs_user_created_idx"),
            models.Index(fields=["org", "timestamp"], name="audit_logs_org_created_idx"),
            models.Index(fields=["org", "legacy_action"], name="audit_logs_org_action_idx"),
            # The hash chain of an organization is its entries in id order.
            models.Index(fields=["org", "id"], name="audit_logs_org_id_idx"),
            # The admin's searches by IP and by resource id.
            models.Index(fields=["remote_addr"], name="audit_logs_ip_idx"),
            models.Index(fields=["resource_id"], name="audit_logs_resource_idx"),
            # auditlog's object history and correlation id; the action filter without an org.
            models.Index(fields=["object_pk"], name="audit_logs_object_pk_idx"),
            models.Index(fields=["cid"], name="audit_logs_cid_idx"),
            models.Index(fields=["legacy_action"], name="audit_logs_legacy_action_idx"),
            # The admin's success filter: without it MariaDB counted a million rows per page.
            models.Index(fields=["success", "timestamp"], name="audit_logs_success_idx"),
        ]

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditLogImmutableError("audit log entries cannot be updated")
        kwargs["force_insert"] = True
        kwargs.pop("force_update", None)
        kwargs.pop("update_fields", None)
        super().save(*args, **kwargs)

    def _save_table(self, raw=False, cls=None, force_insert=False, force_update=False, using=None, update_fields=None):
        # Runs after the pre_save signal (where django-auditlog sets the actor and the
        # address), so the hash covers the values that are actually written.
        from security.audit import append_to_chain, fill_request_context

        fill_request_context(self)
        with transaction.atomic(using=using):
            with append_to_chain(self, using=using):
                return super()._save_table(raw, cls, force_insert, force_update, using, update_fields)

    def delete(self, *args, **kwargs):
        raise AuditLogImmutableError("audit log entries cannot be deleted (retention: security.audit.purge_expired)")


class AuditChainHead(models.Model):
    """The tip of one organization's hash chain (``chain_key`` "system" for entries without one).

    Writers lock this row (SELECT ... FOR UPDATE), so appends to one chain are serialised
    on every backend and isolation level. ``anchor_*`` is the last entry removed by the
    retention purge: the first remaining entry must point at it.
    """

    chain_key = models.CharField(max_length=40, primary_key=True)
    last_id = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, blank=True, default="")
    anchor_id = models.BigIntegerField(default=0)
    anchor_hash = models.CharField(max_length=64, blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "audit_chain_heads"
        verbose_name = "audit chain head"

    def __str__(self):
        return f"{self.chain_key} @ {self.last_id}"
