"""Abstract bases shared by every AgentForge table: legacy ids and organization scoping."""

from __future__ import annotations

import uuid

from django.core.exceptions import FullResultSet
from django.db import models
from django.db.models import F
from django.db.models.lookups import Exact, Lookup
from django.utils import timezone

from accounts.tenancy import ALL_ORGS, OrgScopeError, current_org, unscoped

# Namespace for deterministic ids of legacy records whose ids are not UUIDs.
LEGACY_NAMESPACE = uuid.UUID("6f1c7a1e-9d0b-4c55-8a43-3b8f2a0e5d17")


def legacy_uuid(table: str, legacy_id: str) -> uuid.UUID:
    """Deterministic primary key for a legacy record.

    A legacy id that already is a UUID (users, agents, conversations...) is kept as the
    primary key, so the application's references keep working; any other id
    (``org_default``, ``role_admin``, ``demo-kb-1a2b3c4d``) maps through uuid5 per table,
    the same on every run.
    """
    try:
        return uuid.UUID(str(legacy_id))
    except ValueError:
        return uuid.uuid5(LEGACY_NAMESPACE, f"{table}:{legacy_id}")


class LegacyRecordModel(models.Model):
    """A row that may come from the legacy JSON files.

    ``legacy_id`` keeps the original id (unique per table, so imports can be re-run);
    ``legacy_extra`` keeps keys the importer does not map (fields of a newer or older
    era, dangling references) so export writes them back unchanged.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    legacy_id = models.CharField(max_length=128, null=True, blank=True, unique=True, editable=False)
    legacy_extra = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        abstract = True


class TimestampedModel(models.Model):
    # Not auto_now/auto_now_add: those overwrite imported timestamps in bulk_create.
    created_at = models.DateTimeField(default=timezone.now, db_index=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            self.updated_at = timezone.now()
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "updated_at"}
        super().save(*args, **kwargs)


def _as_uuid(value):
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return value


def check_org_for_write(obj) -> None:
    """Fill the active organization on a new row; refuse a row of another organization.

    Outside any scope a row must name its organization, unless its ``org`` field is
    nullable (a system-wide row such as a security event for an unknown email).
    """
    active = current_org()
    if active is ALL_ORGS:
        return
    if obj.org_id is None:
        if active is None:
            if type(obj)._meta.get_field("org").null:
                return
            raise OrgScopeError(
                f"{type(obj).__name__}: no organization set and none active (use org_scope(org))"
            )
        obj.org_id = active
    elif active is not None and _as_uuid(obj.org_id) != active:
        raise OrgScopeError(
            f"{type(obj).__name__}: row belongs to organization {obj.org_id}, active is {active}"
        )


class ActiveOrgLookup(Lookup):
    """``org_id = <the organization active when the SQL is compiled>``; fails closed.

    A queryset made while no organization is active (a ModelForm's choices built at
    import time, a related manager read before the scope opens) carries this condition
    instead of raising at once. It is compiled into every statement that queryset
    produces (SELECT, COUNT, EXISTS, UPDATE, DELETE, subqueries, unions), so running it
    with no organization active raises OrgScopeError, inside an organization it returns
    that organization's rows, and inside ``unscoped()`` it matches every row.
    """

    lookup_name = "active_org"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        active = current_org()
        if active is None:
            model = getattr(compiler.query, "model", None)
            name = model.__name__ if model is not None else "a tenant table"
            raise OrgScopeError(
                f"{name}.objects used with no active organization: "
                "wrap the code in org_scope(org) or use .all_orgs"
            )
        if active is ALL_ORGS:
            raise FullResultSet
        return compiler.compile(Exact(self.lhs, active))


def apply_org_scope(queryset: models.QuerySet, field: str = "org") -> models.QuerySet:
    """Restrict ``queryset`` to the active organization (the scoped managers' filter).

    Inside ``org_scope(org)`` the filter is bound at once; inside ``unscoped()`` nothing
    is filtered; with no organization active the queryset is still built but raises
    OrgScopeError when it is run (see :class:`ActiveOrgLookup`).
    """
    active = current_org()
    if active is ALL_ORGS:
        return queryset
    if active is not None:
        return queryset.filter(**{f"{field}_id": active})
    return queryset.filter(ActiveOrgLookup(F(field), None))


class OrgScopedQuerySet(models.QuerySet):
    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        for obj in objs:
            check_org_for_write(obj)
        return super().bulk_create(objs, *args, **kwargs)

    def bulk_update(self, objs, fields, *args, **kwargs):
        objs = list(objs)
        for obj in objs:
            check_org_for_write(obj)
        return super().bulk_update(objs, fields, *args, **kwargs)

    def for_org(self, org):
        from accounts.tenancy import _resolve

        return self.filter(org_id=_resolve(org))


class _OrgQuerySetManagerMixin:
    @classmethod
    def from_queryset(cls, queryset_class, class_name=None):
        # A model's own queryset (``OrgScopedManager.from_queryset(ChunkQuerySet)``) must
        # keep the organization checks of bulk_create/bulk_update even when it derives
        # from plain QuerySet: mix OrgScopedQuerySet in rather than silently losing them.
        if not issubclass(queryset_class, OrgScopedQuerySet):
            queryset_class = type(
                queryset_class.__name__,
                (queryset_class, OrgScopedQuerySet),
                {"__module__": queryset_class.__module__, "__qualname__": queryset_class.__qualname__},
            )
        return super().from_queryset(queryset_class, class_name=class_name)


class OrgScopedManager(_OrgQuerySetManagerMixin, models.Manager.from_queryset(OrgScopedQuerySet)):
    """``Model.objects``: only the active organization's rows; raises when none is active.

    The error comes when the query runs (like any other database error), not when the
    queryset is built, so querysets made at import time (form choices) keep working.
    """

    def get_queryset(self):
        return apply_org_scope(super().get_queryset())


class AllOrgsManager(_OrgQuerySetManagerMixin, models.Manager.from_queryset(OrgScopedQuerySet)):
    """``Model.all_orgs``: every organization's rows, for system work."""


class OrgOwnedModel(models.Model):
    """A tenant row. Subclasses declare ``org = org_foreign_key(related_name=...)``."""

    objects = OrgScopedManager()
    all_orgs = AllOrgsManager()

    class Meta:
        abstract = True
        # Related managers (org.agents, agent.conversations) derive from the default
        # manager (``objects``, the first one declared), so they are scoped too.
        # Django's internals (deletion cascades, refresh_from_db, forward foreign keys,
        # FK validation) use the base manager, a plain unscoped Manager. Subclasses
        # that declare their own Meta do not inherit these two names; the managers'
        # declaration order gives the same result.
        default_manager_name = "objects"
        base_manager_name = "all_orgs"

    def save(self, *args, **kwargs):
        check_org_for_write(self)
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        check_org_for_write(self)
        return super().delete(*args, **kwargs)

    def validate_unique(self, exclude=None):
        # Uniqueness is global in the database, so check it across organizations.
        with unscoped():
            super().validate_unique(exclude=exclude)

    def validate_constraints(self, exclude=None):
        with unscoped():
            super().validate_constraints(exclude=exclude)


def org_foreign_key(related_name: str, null: bool = False, db_index: bool = True) -> models.ForeignKey:
    """The organization column. ``db_index=False`` where an org-leading composite index
    serves the same lookups (a second index only slows the writes of a big table)."""
    return models.ForeignKey(
        "accounts.Organization",
        on_delete=models.CASCADE,
        related_name=related_name,
        db_column="org_id",
        null=null,
        blank=null,
        editable=True,
        db_index=db_index,
    )


def org_index(table: str, *fields: str) -> models.Index:
    """An index leading with org_id, named within Oracle's 30-character limit."""
    suffix = "_".join(f.replace("_at", "").replace("_id", "")[:6] for f in fields)
    return models.Index(fields=["org", *fields], name=f"{table[:14]}_org_{suffix}"[:30])
