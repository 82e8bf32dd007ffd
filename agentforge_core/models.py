"""Abstract bases shared by every AgentForge table: legacy ids and organization scoping."""

from __future__ import annotations

import contextvars
import functools
import inspect
import re
import uuid

from django.core.exceptions import FieldDoesNotExist, FullResultSet, ValidationError
from django.db import models, router
from django.db.models import BooleanField, F, Q
from django.db.models.expressions import Expression, RawSQL
from django.db.models.lookups import Exact, IsNull, Lookup
from django.db.models.sql import Query, UpdateQuery
from django.db.models.sql.constants import LOUTER
from django.db.models.sql.datastructures import BaseTable
from django.db.models.sql.where import AND
from django.utils import timezone

from agentforge_core import native
from agentforge_core.tenancy import ALL_ORGS, OrgScopeError, current_org, resolve_org, unscoped
from agentforge_site.caching import rows_changed

# Namespace for deterministic ids of legacy records whose ids are not UUIDs.
LEGACY_NAMESPACE = uuid.UUID("6f1c7a1e-9d0b-4c55-8a43-3b8f2a0e5d17")


def legacy_uuid(table: str, legacy_id: str) -> uuid.UUID:
    """Deterministic primary key for a legacy record.

    A legacy id that already is a UUID (users, agents, conversations...) is kept as the
    primary key, so the application's references keep working; any other id
    (``org_default``, ``role_admin``, ``demo-kb-1a2b3c4d``) maps through uuid5 per table,
    the same on every run.
    """
    if native.uuid_from_text is not None:  # the plain forms, in C
        parsed = native.uuid_from_text(legacy_id)
        if parsed is not None:
            return parsed
    try:
        return uuid.UUID(legacy_id if type(legacy_id) is str else str(legacy_id))  # str() costs a call per row
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
            raise OrgScopeError(f"{type(obj).__name__}: no organization set and none active (use org_scope(org))")
        obj.org_id = active
    elif active is not None and _as_uuid(obj.org_id) != active:
        raise OrgScopeError(f"{type(obj).__name__}: row belongs to organization {obj.org_id}, active is {active}")


def check_org_for_delete(obj) -> None:
    """Refuse to delete, inside ``org_scope(A)``, a row the database holds for another organization.

    Django deletes by primary key, whatever the instance in hand says: ``Agent(pk=x).delete()``
    (the delete-without-loading idiom) takes its organization from the scope, so the row's own
    is looked up. One query, only with an organization active.
    """
    active = current_org()
    if active is None or active is ALL_ORGS or obj.pk is None:
        return
    stored = _org_of_target(type(obj), obj.pk)
    if stored is not None and _as_uuid(stored) != active:
        raise OrgScopeError(
            f"{type(obj).__name__} {obj.pk} belongs to another organization: it cannot be deleted from {active}"
        )


def scope_field(model):
    """The field that says which organization a row of ``model`` belongs to, or None.

    A tenant row: its ``org`` foreign key. An Organization: its primary key (a scoped
    query on organizations shows the active one). Global tables (the permission
    catalog, system settings, Django's own tables): None.
    """
    meta = model._meta
    if meta.label == "accounts.Organization":
        return meta.pk
    try:
        field = meta.get_field("org")
    except FieldDoesNotExist:
        return None
    if not field.is_relation or field.many_to_many or field.one_to_many:
        return None
    target = field.remote_field.model
    label = target if isinstance(target, str) else target._meta.label
    return field if str(label).lower() == "accounts.organization" else None


@functools.cache
def _scoped_tables() -> dict:
    """db_table -> (scoping field, primary key) of every tenant table, Organization included."""
    from django.apps import apps

    tables = {}
    for model in apps.get_models():
        field = scope_field(model)
        if field is not None:
            tables[model._meta.db_table] = (field, model._meta.pk)
    return tables


def _joined_tables_condition(compiler, base_alias, active):
    """``alias.org_id = <active>`` for every other tenant table joined into the query.

    A LEFT OUTER JOIN also keeps the rows that found nothing to join (``pk IS NULL``), so
    ``values("mfa__totp_secret")`` still lists a user without MFA; a row linked to
    another organization's row is left out. The aliases are read from the query being
    compiled, so joins added after the scope was attached (values(), select_related,
    ordering) are covered too. ``base_alias=None``: the query's own table as well.
    """
    query = compiler.query
    sqls, params = [], []
    for alias, join in query.alias_map.items():
        if alias == base_alias or not query.alias_refcount.get(alias):
            continue
        if isinstance(join, BaseTable) and base_alias is not None:
            continue
        scoped = _scoped_tables().get(join.table_name)
        if scoped is None:
            continue
        field, pk = scoped
        sql, sql_params = compiler.compile(Exact(field.get_col(alias), active))
        if getattr(join, "join_type", None) == LOUTER:
            null_sql, null_params = compiler.compile(IsNull(pk.get_col(alias), True))
            sql, sql_params = f"({sql} OR {null_sql})", (*sql_params, *null_params)
        sqls.append(sql)
        params.extend(sql_params)
    return sqls, params


def _expressions_of(query):
    """Every expression of ``query`` the SQL is built from, nested ones included, and the
    ``Query`` of each subquery (not what is inside it: a scoped one checks itself when it is
    compiled)."""
    stack = [query.where, *query.annotations.values(), *query.select]
    stack += [e for e in query.order_by if hasattr(e, "get_source_expressions")]
    if isinstance(query.group_by, tuple):
        stack += list(query.group_by)
    stack += [value for _field, _model, value in getattr(query, "values", ())]  # UPDATE ... SET
    while stack:
        node = stack.pop()
        if isinstance(node, Query):
            yield node  # the subquery's statement itself, not what is inside it
            continue
        if not hasattr(node, "get_source_expressions"):
            continue
        yield node
        stack.extend(e for e in node.get_source_expressions() if e is not None)


def refuse_raw_sql(query, subqueries: bool = False) -> None:
    """A ``RawSQL`` expression in a scoped statement is refused like ``raw()`` and ``extra()``:
    its SQL text can read any table, and the scoping cannot see into it. With ``subqueries``,
    so is an unscoped subquery of tenant tables (:func:`refuse_unscoped_subquery`), in the same walk."""
    model_name = query.model.__name__ if query.model is not None else "a tenant table"
    for node in _expressions_of(query):
        if isinstance(node, RawSQL):
            raise OrgScopeError(
                f"{model_name}.objects with RawSQL(): raw SQL is not organization-scoped; "
                "use expressions, or all_orgs for system work"
            )
        if subqueries and isinstance(node, Query):
            refuse_unscoped_subquery(model_name, node)


def carries_org_condition(query) -> bool:
    """Whether ``query`` is held to the active organization when it runs: a scoped manager's
    condition, a relation accessor's, or the one of an ``exclude()`` subquery."""
    stack = [query.where]
    while stack:
        node = stack.pop()
        if isinstance(node, (ActiveOrgLookup, ActiveOrgTables)):
            return True
        stack.extend(getattr(node, "children", ()))
    return False


def reads_tenant_tables(query) -> bool:
    """Whether ``query`` reads a tenant table: its own, or one it joins."""
    tables = _scoped_tables()
    model_table = query.model._meta.db_table if query.model is not None else None
    return model_table in tables or any(
        join.table_name in tables for alias, join in query.alias_map.items() if query.alias_refcount.get(alias)
    )


def reads_other_orgs(query) -> bool:
    """Whether ``query`` reads tenant tables without being held to the active organization
    (an ``all_orgs`` or base-manager queryset), so that every organization's rows come back."""
    return reads_tenant_tables(query) and not carries_org_condition(query)


def refuse_unscoped_subquery(model_name: str, subquery) -> None:
    """A subquery over tenant tables that is not itself scoped (``Subquery(Tool.all_orgs...)``,
    ``Exists(...)``, ``pk__in=Model.all_orgs...``) is refused in a scoped statement, as
    combining a scoped queryset with an unscoped one is: it would read every organization's
    rows into the active one's results on SQLite and MariaDB, and only the active one's on
    PostgreSQL (row-level security)."""
    if reads_other_orgs(subquery):
        name = subquery.model.__name__
        raise OrgScopeError(
            f"{model_name}.objects with a subquery of {name} that is not organization-scoped "
            f"(all_orgs or a base manager): use {name}.objects in a scoped statement"
        )


def refuse_unscoped_prefetch(lookup, caller: str) -> None:
    """``Prefetch(queryset=<all_orgs or a base manager>)`` in a scoped read, refused as an
    unscoped subquery is: through a link between organizations the prefetch hands over the
    other organization's rows (SQLite and MariaDB; only the active one's on PostgreSQL)."""
    queryset = getattr(lookup, "queryset", None)
    if queryset is not None and reads_other_orgs(queryset.query):
        name = queryset.model.__name__
        raise OrgScopeError(
            f"{caller}(Prefetch({lookup.prefetch_through!r}, queryset=...)): the queryset of {name} "
            f"is not organization-scoped; use {name}.objects"
        )


class ActiveOrgLookup(Lookup):
    """``org_id = <the organization active when the SQL is compiled>``; fails closed.

    The organization is read when the statement is compiled, never when the queryset is
    built: a queryset made inside ``org_scope(B)`` or ``unscoped()`` (cached, pickled,
    handed to other code) and run under A returns A's rows. It is compiled into every
    statement the queryset produces (SELECT, COUNT, EXISTS, UPDATE, DELETE, subqueries,
    unions); with no organization active it raises OrgScopeError, inside ``unscoped()``
    it matches every row. Every other tenant table joined into the same statement
    (``values("tools__credentials")``, ``select_related``, filters across relations) is
    restricted to the active organization as well.
    """

    lookup_name = "active_org"
    prepare_rhs = False
    # A scoped manager's statement holds scoped subqueries only; Django's own held reads
    # (ActiveOrgIfAnyLookup: accessors, cascades) take the keys they are handed, all_orgs ones too.
    refuses_unscoped_subqueries = True

    def no_active_org(self, compiler):
        model = getattr(compiler.query, "model", None)
        name = model.__name__ if model is not None else "a tenant table"
        raise OrgScopeError(
            f"{name}.objects used with no active organization: wrap the code in org_scope(org) or use .all_orgs"
        )

    def as_sql(self, compiler, connection):
        refuse_raw_sql(compiler.query, subqueries=self.refuses_unscoped_subqueries)
        active = current_org()
        if active is None:
            self.no_active_org(compiler)
        if active is ALL_ORGS:
            raise FullResultSet
        sql, params = compiler.compile(Exact(self.lhs, active))
        joined, joined_params = _joined_tables_condition(compiler, self.lhs.alias, active)
        return " AND ".join([sql, *joined]), (*params, *joined_params)


class ActiveOrgIfAnyLookup(ActiveOrgLookup):
    """:class:`ActiveOrgLookup` that matches every row when no organization is active.

    Used by the relation accessors (``message.conversation``, ``user.mfa``): inside
    ``org_scope(A)`` they never reach another organization's row, while authentication
    and system code, which run before any organization is known, keep working.
    """

    lookup_name = "active_org_if_any"
    refuses_unscoped_subqueries = False

    def no_active_org(self, compiler):
        raise FullResultSet


class ActiveOrgTables(Expression):
    """Every tenant table of the statement it is compiled into restricted to the active
    organization: the condition of the inner query Django builds for ``exclude()`` across
    a multi-valued relation (``NOT EXISTS (SELECT … FROM agent_tools JOIN tools …)``),
    which the outer statement's :class:`ActiveOrgLookup` cannot reach. Without it, a
    planted link to another organization's row would let ``exclude(tools__name=…)``
    answer questions about that row."""

    conditional = True
    output_field = BooleanField()

    def as_sql(self, compiler, connection):
        active = current_org()
        if active is None:
            raise OrgScopeError("a subquery of a scoped query ran with no active organization")
        if active is ALL_ORGS:
            raise FullResultSet
        sqls, params = _joined_tables_condition(compiler, None, active)
        if not sqls:
            raise FullResultSet
        return " AND ".join(sqls), params


class HeldTenantJoins(ActiveOrgTables):
    """:class:`ActiveOrgTables` for a global table's queries (the permission catalogs): every
    tenant table they join is held to the active organization, as row-level security holds it
    on PostgreSQL; with no organization active (authentication) or inside ``unscoped()``, every row."""

    def as_sql(self, compiler, connection):
        if current_org() is None:
            raise FullResultSet
        return super().as_sql(compiler, connection)


# The condition the inner query of an exclude() being built takes (see TenantQuery), if any.
_building_scoped_subquery: contextvars.ContextVar = contextvars.ContextVar("agentforge_scoped_subquery", default=None)


class TenantQuery(Query):
    """The SQL query of scoped querysets and of global tables' held ones: ``exclude()`` across a
    relation builds its inner query restricted to the active organization too (see
    :class:`ActiveOrgTables`; :class:`HeldTenantJoins` for a held query)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        condition = _building_scoped_subquery.get()
        if condition is not None:
            self.where.add(condition(), AND)

    def split_exclude(self, filter_expr, can_reuse, names_with_path):
        if is_org_scoped(self):
            condition = ActiveOrgTables
        else:
            condition = HeldTenantJoins if carries_org_condition(self) else None
        token = _building_scoped_subquery.set(condition)
        try:
            return super().split_exclude(filter_expr, can_reuse, names_with_path)
        finally:
            _building_scoped_subquery.reset(token)


def apply_org_scope(queryset: models.QuerySet, field: str = "org", lookup=ActiveOrgLookup) -> models.QuerySet:
    """Restrict ``queryset`` to the organization active when it runs (the scoped managers' filter).

    Nothing is bound when the queryset is built: each statement it produces reads the
    active organization as it is compiled (see :class:`ActiveOrgLookup`).
    """
    return queryset.filter(lookup(F(field), None))


def is_org_scoped(query) -> bool:
    """Whether ``query`` carries the active-organization condition of a scoped manager."""
    stack = [query.where]
    while stack:
        node = stack.pop()
        if isinstance(node, ActiveOrgLookup) and not isinstance(node, ActiveOrgIfAnyLookup):
            return True
        stack.extend(getattr(node, "children", ()))
    return False


def _org_of_target(model, value):
    """The organization of the row ``value`` (an instance or a primary key) of ``model``."""
    field = scope_field(model)
    if isinstance(value, models.Model):
        # By its key, never the instance's own organization: a loaded instance whose key was
        # pointed at another row (``agent.pk = <B's>``) still says where it was loaded from.
        value = value.pk
    if field.primary_key:
        return _as_uuid(value)
    manager = getattr(model, "all_orgs", None) or model._base_manager
    with unscoped():  # a look-up of the target's organization only (PostgreSQL: past row-level security)
        return manager.filter(pk=value).values_list(field.attname, flat=True).first()


@functools.cache
def tenant_links(model) -> tuple:
    """The foreign keys of ``model`` that point at another tenant row (the org key aside),
    one-to-one keys (``MFASettings.user``) included, as the composite tenant keys take them."""
    own = scope_field(model)
    return tuple(
        f
        for f in model._meta.concrete_fields
        if f.is_relation
        and (f.many_to_one or f.one_to_one)
        and f is not own
        and scope_field(f.related_model) is not None
    )


def check_org_links(objs, fields=None) -> None:
    """Refuse rows whose foreign keys point at another organization's rows.

    The invariant behind every write path (save, create, bulk_create, bulk_update,
    related add/set, through rows, admin forms): a link between tenant rows stays
    inside one organization. One query per foreign key per batch looks the targets up.
    """
    objs = [obj for obj in objs if getattr(obj, "org_id", None) is not None]
    if not objs:
        return
    model = type(objs[0])
    for field in tenant_links(model):
        if fields is not None and field.name not in fields and field.attname not in fields:
            continue
        # Looked up by key even when the target instance is in hand: its organization is what
        # it was loaded with, whatever its key has been pointed at since (see _org_of_target).
        pending = {}
        for obj in objs:
            target_id = getattr(obj, field.attname)
            if target_id is not None:
                pending.setdefault(_as_uuid(target_id), []).append(obj)
        if not pending:
            continue
        target_field = scope_field(field.related_model)
        manager = getattr(field.related_model, "all_orgs", None) or field.related_model._base_manager
        # Unscoped: on PostgreSQL, row-level security would hide another organization's
        # target, which would then pass for a dangling id (refused only at COMMIT).
        with unscoped():
            found = dict(manager.filter(pk__in=list(pending)).values_list("pk", target_field.attname))
        for target_id, owners in pending.items():
            if target_id not in found:
                continue  # a dangling id: the database's foreign key refuses it
            for obj in owners:
                _refuse_crossing(obj, field, target_id, found[target_id])


def cross_org_links(models_to_check=None, skip=frozenset()):
    """Yield ``(model, field, row pk, row legacy id, target pk)`` for every stored link
    from one organization's row to another's.

    Writes through the ORM are checked as they happen (:func:`check_org_links`); this
    looks at what is already in the database, for writers that bypass the ORM (the
    importer's COPY / multi-row INSERT) and for audits. One query per foreign key, but for
    the links in ``skip`` (``(table, column)``: ones the caller knows the database checks).
    """
    from django.apps import apps

    for model in models_to_check or apps.get_models():
        own = scope_field(model)
        if own is None or own.primary_key:
            continue
        manager = getattr(model, "all_orgs", None) or model._base_manager
        has_legacy = any(f.name == "legacy_id" for f in model._meta.concrete_fields)
        for field in tenant_links(model):
            if (model._meta.db_table, field.column) in skip:
                continue
            target_org = f"{field.name}__{scope_field(field.related_model).name}"
            rows = (
                manager.filter(**{f"{own.attname}__isnull": False, f"{target_org}__isnull": False})
                .exclude(**{target_org: F(own.attname)})
                .values_list("pk", "legacy_id" if has_legacy else "pk", field.attname)
                # No ordering: PostgreSQL plans a cursor for its first rows, and a sort by the
                # default ordering made that a nested loop (4 times slower at 100,000 rows).
                .order_by()
            )
            for pk, legacy_id, target_id in rows.iterator():
                yield model, field, pk, legacy_id, target_id


def _unique_field_sets(model) -> list:
    """Every set of columns a conflict of an upsert can be on (MySQL and MariaDB take no target:
    any unique key of the table)."""
    meta = model._meta
    sets = [(meta.pk,)]
    sets += [(f,) for f in meta.concrete_fields if f.unique and not f.primary_key]
    sets += [tuple(meta.get_field(name) for name in names) for names in meta.unique_together]
    sets += [tuple(meta.get_field(name) for name in c.fields) for c in meta.total_unique_constraints]
    return sets


def refuse_upserts_into_other_orgs(model, objs, unique_fields=None) -> None:
    """Refuse ``bulk_create(update_conflicts=True)`` rows that conflict with another
    organization's row: the database would update that row (ON CONFLICT DO UPDATE, ON DUPLICATE
    KEY UPDATE) with this organization's values. A key that holds the organization only ever
    conflicts inside it. For Organization rows, another organization is any but the active one
    (unscoped system work creates and renames organizations). One query per unique key and
    batch of rows."""
    own = scope_field(model)
    meta = model._meta
    if own.primary_key:
        active = current_org()
        if active is None or active is ALL_ORGS:
            return
        owners = [(obj, active) for obj in objs]
    else:
        owners = [(obj, getattr(obj, own.attname)) for obj in objs if getattr(obj, own.attname) is not None]
    if unique_fields:
        field_sets = [tuple(meta.pk if name == "pk" else meta.get_field(name) for name in unique_fields)]
    else:
        field_sets = _unique_field_sets(model)
    manager = getattr(model, "all_orgs", None) or model._base_manager
    for fields in field_sets:
        if own in fields and not own.primary_key:
            continue
        for start in range(0, len(owners), 100):
            clash = Q()
            for obj, owner in owners[start : start + 100]:
                values = {f.attname: getattr(obj, f.attname) for f in fields}
                if None not in values.values():
                    clash |= Q(**values) & ~Q(**{own.attname: owner})
            if not clash:
                continue
            with unscoped():  # PostgreSQL: past row-level security, which would hide the row
                taken = manager.filter(clash).values_list("pk", flat=True).first()
            if taken is not None:
                names = ", ".join(f.name for f in fields)
                raise OrgScopeError(
                    f"{model.__name__}.bulk_create(update_conflicts=True): a row with the same {names} "
                    f"({taken}) belongs to another organization"
                )


def _refuse_crossing(obj, field, target_id, target_org) -> None:
    if target_org is not None and _as_uuid(target_org) != _as_uuid(obj.org_id):
        raise OrgScopeError(
            f"{type(obj).__name__}.{field.name}: {field.related_model.__name__} {target_id} belongs to "
            f"organization {target_org}, the row to organization {obj.org_id}"
        )


def _stored_orgs(model, pks) -> list:
    """``(pk, organization)`` of the rows of ``model`` with these keys, as the database holds them."""
    own = scope_field(model)
    manager = getattr(model, "all_orgs", None) or model._base_manager
    with unscoped():  # PostgreSQL: past row-level security
        return [(pk, _as_uuid(org)) for pk, org in manager.filter(pk__in=list(pks)).values_list("pk", own.attname)]


def _refuse_change_from_scope(model, pk, org) -> None:
    """Inside org_scope(A), a row another organization holds is not A's to change."""
    if current_org() not in (None, ALL_ORGS) and org != current_org():
        raise OrgScopeError(
            f"{model.__name__} {pk} belongs to another organization: it cannot be changed from {current_org()}"
        )


def check_global_join_table_write(manager, objs=()) -> None:
    """``user.user_permissions.add()``/``remove()``/``clear()``/``set()`` and ``permission.user_set...``:
    the join table of a tenant model and a global one holds no organization, so neither the link
    checks nor row-level security see it. Inside org_scope(A) the tenant rows whose links change
    (the instance, or the rows handed over) must be A's: B's user, by its key or an instance keyed
    to it, was granted or stripped of Django permissions on every backend."""
    if current_org() in (None, ALL_ORGS) or scope_field(manager.through) is not None:
        return
    for model, pks in (
        (type(manager.instance), [manager.instance.pk]),
        (manager.model, [getattr(o, "pk", o) for o in objs]),
    ):
        if scope_field(model) is not None and pks:
            for pk, org in _stored_orgs(model, pks):
                _refuse_change_from_scope(model, pk, org)


def check_reverse_add(field, instance, objs) -> None:
    """``instance.<reverse accessor>.add(*objs)`` (and ``set()``), which Django writes as one UPDATE
    by key through the unscoped base manager, whatever the instances in hand say: inside
    org_scope(A) every row it changes must be one A holds, as the UPDATE of save() is
    (:class:`HeldToActiveOrg`), and the link it writes stays inside one organization, in system
    work too (:func:`check_org_links`). ``org.agents.add(row)`` moves the row: only unscoped."""
    model = field.model
    own = scope_field(model)
    objs = [obj for obj in objs if isinstance(obj, model) and obj.pk is not None]  # Django refuses the others
    if own is None or own.primary_key or not objs:
        return
    target_org = _as_uuid(_org_of_target(field.related_model, instance.pk))
    scoped = current_org() not in (None, ALL_ORGS)
    for pk, org in _stored_orgs(model, [obj.pk for obj in objs]):
        _refuse_change_from_scope(model, pk, org)
        # A link between organizations; through the org key itself a move, left to system work.
        if (field is not own or scoped) and None not in (org, target_org) and org != target_org:
            raise OrgScopeError(
                f"{model.__name__}.{field.name}: {field.related_model.__name__} {instance.pk} belongs to "
                f"organization {target_org}, the row to organization {org}"
            )


# A quoted, table-qualified column: "agent_tools"."agent_id", `agent_tools`.`agent_id`.
_COLUMN_REFERENCE = re.compile(r'^[`"\[]?\w+[`"\]]?\.[`"\[]?\w+[`"\]]?$')


def _is_prefetch_column_select(args, kwargs) -> bool:
    """The one ``extra()`` Django itself makes: prefetching a many-to-many relation selects
    the join table's key (``_prefetch_related_val_agent_id``), a column of a table the
    statement already joins (and restricts), no SQL of anyone's choosing."""
    select = kwargs.get("select")
    return (
        not args
        and set(kwargs) == {"select"}
        and bool(select)
        and all(
            name.startswith("_prefetch_related_val_") and _COLUMN_REFERENCE.match(sql) for name, sql in select.items()
        )
    )


class WriteNotifyingQuerySet(models.QuerySet):
    """Announces the writes that send no per-row signals (``update()``, ``bulk_create()``,
    ``bulk_update()``) through ``rows_changed``, with the organizations they touch, so the
    caches that depend on the table hear of every write path."""

    def _written_org_ids(self, objs=None):
        """The organizations the write touches; None when the table is global."""
        field = scope_field(self.model)
        if field is None:
            return None
        if objs is not None:
            return {getattr(obj, field.attname) for obj in objs}
        active = current_org()
        if active not in (None, ALL_ORGS) and is_org_scoped(self.query):
            return {active}
        # Read before the update: its filter may be on the columns it changes.
        return set(self.order_by().values_list(field.attname, flat=True).distinct())

    def update(self, **kwargs):
        if not rows_changed.has_listeners(self.model):
            return super().update(**kwargs)
        org_ids = self._written_org_ids()
        rows = super().update(**kwargs)
        if rows:
            rows_changed.send(sender=self.model, org_ids=org_ids, using=self.db)
        return rows

    def bulk_create(self, objs, *args, **kwargs):
        created = super().bulk_create(objs, *args, **kwargs)
        if created and rows_changed.has_listeners(self.model):
            rows_changed.send(sender=self.model, org_ids=self._written_org_ids(created), using=self.db)
        return created

    def bulk_update(self, objs, fields, *args, **kwargs):
        objs = list(objs)
        rows = super().bulk_update(objs, fields, *args, **kwargs)
        if rows and rows_changed.has_listeners(self.model):
            rows_changed.send(sender=self.model, org_ids=self._written_org_ids(objs), using=self.db)
        return rows


class ScopedQuerySet(WriteNotifyingQuerySet):
    """What every organization-scoped queryset refuses or re-checks.

    * ``raw()`` and ``extra()`` on a scoped queryset: SQL text the scoping cannot see
      into (but for the join-table column Django's own many-to-many prefetch selects). ``Model.all_orgs.raw()`` stays for system work, which filters ``org_id``
      itself.
    * ``update()`` that moves rows to another organization, or links them to another
      organization's rows.
    * Combining (``|``, ``&``, ``^``, ``union()``, ``intersection()``, ``difference()``) a
      scoped queryset with an unscoped one, or holding one: an unscoped subquery of tenant tables
      (:func:`refuse_unscoped_subquery`, when it runs) or ``Prefetch(queryset=...)``.
    * An upsert (``bulk_create(update_conflicts=True)``) that would update another
      organization's row (:func:`refuse_upserts_into_other_orgs`).
    * ``RawSQL`` expressions in a scoped statement (:func:`refuse_raw_sql`, when it runs).
    * Results fetched under one organization and read again under another (a queryset
      kept in a variable, a cache, a pickle, or filled by ``prefetch_related``, as in
      ``agent.tools.all()``): they are fetched again. Model instances already loaded are
      data in hand, not queries: their fields, ``select_related`` objects and
      ``Prefetch(to_attr=...)`` lists are not re-checked (docs/row-level-security.md).
    """

    def __init__(self, model=None, query=None, using=None, hints=None):
        super().__init__(model, TenantQuery(model) if query is None else query, using, hints)
        # The organization a prefetch fills this queryset's results under (it sets
        # _result_cache directly, without _fetch_all).
        self._results_org = current_org()

    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        options = inspect.signature(models.QuerySet.bulk_create).bind(self, objs, *args, **kwargs).arguments
        if options.get("update_conflicts") and scope_field(self.model) is not None:
            refuse_upserts_into_other_orgs(self.model, objs, options.get("unique_fields"))
        return super().bulk_create(objs, *args, **kwargs)

    def raw(self, raw_query, params=(), translations=None, using=None):
        if is_org_scoped(self.query):
            raise OrgScopeError(
                f"{self.model.__name__}.objects.raw(): raw SQL is not organization-scoped; "
                f"use {self.model.__name__}.all_orgs.raw() and filter org_id yourself"
            )
        return super().raw(raw_query, params=params, translations=translations, using=using)

    def extra(self, *args, **kwargs):
        if is_org_scoped(self.query) and not _is_prefetch_column_select(args, kwargs):
            raise OrgScopeError(
                f"{self.model.__name__}.objects.extra(): raw SQL is not organization-scoped; "
                "use expressions, or all_orgs for system work"
            )
        return super().extra(*args, **kwargs)

    def update(self, **kwargs):
        if is_org_scoped(self.query):
            # Refused here, before the write hook reads which organizations the update
            # touches: with none active that read fails first and hides why.
            statement = self.query.chain(UpdateQuery)
            statement.add_update_values(kwargs)
            refuse_raw_sql(statement, subqueries=True)
            self._check_update(kwargs)
        return super().update(**kwargs)

    def _check_update(self, values) -> None:
        own = scope_field(self.model)
        active = current_org()
        for name, value in values.items():
            field = self.model._meta.get_field(name)
            if own is not None and field is own:
                raise OrgScopeError(
                    f"{self.model.__name__}.objects.update({name}=...): rows never move to another "
                    "organization through a scoped queryset"
                )
            if active in (None, ALL_ORGS) or value is None or field not in tenant_links(self.model):
                continue
            if hasattr(value, "resolve_expression"):
                raise OrgScopeError(
                    f"{self.model.__name__}.objects.update({name}=<expression>): a link to another "
                    "tenant row must be a row or a key, so its organization can be checked"
                )
            target_org = _org_of_target(field.related_model, value)
            if target_org is not None and _as_uuid(target_org) != active:
                raise OrgScopeError(
                    f"{self.model.__name__}.objects.update({name}=...): the "
                    f"{field.related_model.__name__} belongs to another organization"
                )

    def prefetch_related(self, *lookups):
        # Prefetch(queryset=Tool.all_orgs...) onto a scoped queryset: the prefetched rows would be
        # every organization's ones the join reaches (only the active one's on PostgreSQL).
        if is_org_scoped(self.query):
            for lookup in lookups:
                refuse_unscoped_prefetch(lookup, f"{self.model.__name__}.objects.prefetch_related")
        return super().prefetch_related(*lookups)

    def _merge_sanity_check(self, other):
        super()._merge_sanity_check(other)
        if is_org_scoped(self.query) != is_org_scoped(other.query):
            raise OrgScopeError(f"{self.model.__name__}: a scoped queryset cannot be combined with an unscoped one")

    def _combinator_query(self, combinator, *other_qs, all=False):
        # union(), intersection(), difference(): the siblings of | and &, over any tenant tables.
        for other in other_qs:
            if scope_field(other.model) is not None and is_org_scoped(self.query) != is_org_scoped(other.query):
                raise OrgScopeError(
                    f"{self.model.__name__}.{combinator}(): a scoped queryset cannot be combined with an unscoped one"
                )
        return super()._combinator_query(combinator, *other_qs, all=all)

    def _drop_stale_results(self) -> None:
        if (
            self._result_cache is not None
            and self.__dict__.get("_results_org", current_org()) != current_org()
            and is_org_scoped(self.query)
        ):
            self._result_cache = None
            self._prefetch_done = False

    def _fetch_all(self):
        self._drop_stale_results()
        if self._result_cache is None:
            self._results_org = current_org()
        super()._fetch_all()

    def __getitem__(self, k):
        self._drop_stale_results()
        return super().__getitem__(k)

    def count(self):
        self._drop_stale_results()
        return super().count()

    def exists(self):
        self._drop_stale_results()
        return super().exists()

    def contains(self, obj):
        self._drop_stale_results()
        return super().contains(obj)


class OrgScopedQuerySet(ScopedQuerySet):
    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        for obj in objs:
            check_org_for_write(obj)
        check_org_links(objs)
        return super().bulk_create(objs, *args, **kwargs)

    def bulk_update(self, objs, fields, *args, **kwargs):
        objs = list(objs)
        for obj in objs:
            check_org_for_write(obj)
        check_org_links(objs, fields)
        return super().bulk_update(objs, fields, *args, **kwargs)

    def for_org(self, org):
        return self.filter(org_id=resolve_org(org))


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


class _ScopedAccessorMixin:
    """A relation accessor that never reaches another organization's row (see below)."""

    def get_queryset(self, **hints):
        queryset = super().get_queryset(**hints)
        field = scope_field(queryset.model)
        if field is None:
            return queryset
        return apply_org_scope(queryset, field.name if not field.primary_key else "pk", ActiveOrgIfAnyLookup)


@functools.cache
def _scoped_accessor_class(descriptor_class):
    return type(f"OrgScoped{descriptor_class.__name__}", (_ScopedAccessorMixin, descriptor_class), {})


def scope_relation_accessors() -> None:
    """Make ``message.conversation``, ``user.org`` and ``user.mfa`` respect the active organization.

    Django reads these through the base manager, which is unscoped (deletion cascades,
    ``refresh_from_db`` and foreign-key validation need every row). Inside
    ``org_scope(A)`` the accessors now find only A's rows, so a row of A linked to B's
    (or a B row obtained through ``all_orgs``) raises DoesNotExist instead of handing
    B's row over; with no organization active (authentication) they work as before.
    The foreign keys' validation is held the same way (:class:`_HeldForeignKeyValidation`).
    Called once from ``AgentforgeCoreConfig.ready()``.
    """
    from django.apps import apps

    for model in apps.get_models():
        for field in model._meta.get_fields():
            if not field.is_relation or not (field.many_to_one or field.one_to_one):
                continue
            target = field.related_model
            if target is None or scope_field(target) is None:
                continue
            if field.concrete and not isinstance(field, _HeldForeignKeyValidation):
                field.__class__ = _held_class(_HeldForeignKeyValidation, type(field))
            name = field.name if field.concrete else field.get_accessor_name()
            descriptor = model.__dict__.get(name)
            if descriptor is None or isinstance(descriptor, _ScopedAccessorMixin):
                continue
            descriptor.__class__ = _scoped_accessor_class(type(descriptor))


class _HeldJoinsManagerMixin:
    def get_queryset(self):
        queryset = super().get_queryset()
        if type(queryset.query) is Query:
            queryset.query.__class__ = TenantQuery  # exclude() across a relation: its inner query too
        queryset.query.where.add(HeldTenantJoins(), AND)
        return queryset

    # Equal to the plain manager either way round: the migration autodetector compares a model's
    # managers with the ones the migrations build from the plain class.
    def __eq__(self, other):
        return isinstance(other, self._unheld_class) and self._constructor_args == other._constructor_args

    __hash__ = models.Manager.__hash__


def hold_global_joins_to_active_org() -> None:
    """The managers of global tables that relate to tenant tables (the permission catalogs, the
    admin's log, the auto-created join tables of users), related managers included, hold the
    tenant tables their queries join to the active organization (:class:`HeldTenantJoins`):
    inside org_scope(A), ``Permission.objects.values("roles__name")`` read B's role names.
    Called once from ``AgentforgeCoreConfig.ready()``."""
    from django.apps import apps

    for model in apps.get_models(include_auto_created=True):
        if scope_field(model) is not None or not any(
            f.is_relation and f.related_model is not None and scope_field(f.related_model) is not None
            for f in model._meta.get_fields()
        ):
            continue
        # The model's own managers too: _meta.managers copies them again when the cache expires.
        for manager in (*model._meta.local_managers, *model._meta.managers):
            if not isinstance(manager, _HeldJoinsManagerMixin):
                manager.__class__ = _held_class(_HeldJoinsManagerMixin, type(manager))


class _HeldForeignKeyValidation:
    """``ForeignKey.validate()`` (``full_clean()``, a ModelForm that leaves the field out) held to
    the active organization. Django looks the target up through the unscoped base manager: inside
    org_scope(A) a key of B's row passed, where a key of no row failed, so validation told A
    which of B's keys exist (PostgreSQL's row-level security hid the row: one answer everywhere)."""

    def validate(self, value, model_instance):
        if self.remote_field.parent_link or value is None:
            return super().validate(value, model_instance)
        super(models.ForeignKey, self).validate(value, model_instance)  # the field's own checks, no look-up
        target = self.remote_field.model
        using = router.db_for_read(target, instance=model_instance)
        queryset = held_to_active_org(target._base_manager.using(using).filter(**{self.remote_field.field_name: value}))
        if not queryset.complex_filter(self.get_limit_choices_to()).exists():
            raise ValidationError(
                self.error_messages["invalid"],
                code="invalid",
                params={
                    "model": target._meta.verbose_name,
                    "pk": value,
                    "field": self.remote_field.field_name,
                    "value": value,
                },
            )


@functools.cache
def _held_class(mixin, base):
    # Same module and name: a field's or manager's deconstruct() (migrations) reads them from its class.
    return type(
        base.__name__,
        (mixin, base),
        {"__module__": base.__module__, "__qualname__": base.__qualname__, "_unheld_class": base},
    )


def hold_django_reads_to_active_org() -> None:
    """Django's own reads through the unscoped base manager, held to the active organization as
    row-level security holds them on PostgreSQL (the instance paths are held by HeldToActiveOrg):

    * a deletion collects the rows it cascades into (deletes, sets to NULL) that way: inside
      org_scope(A), a row of B linking to the deleted row of A (a link the importer's bulk writer
      or an old writer left) was deleted or changed. Now B's row stays, and the database's
      foreign key refuses the delete;
    * ``ContentType.get_object_for_this_type()`` (a GenericForeignKey, the admin's "view on site"
      shortcut, ``LogEntry.get_edited_object()``) and ``get_all_objects_for_this_type()``
      handed over B's row by its key;
    * a reverse foreign key's ``add()`` (``set()`` too) updates the rows it is handed by key:
      B's row in hand was linked to A's (:func:`check_reverse_add`);
    * a join table with no organization (``user.user_permissions``) changed and read B's user's
      links (:func:`check_global_join_table_write`), and a global table's rows were read through a
      tenant instance pointed at B's key (:func:`held_to_instance_org`).

    Called once from ``AgentforgeCoreConfig.ready()``."""
    from django.apps import apps
    from django.db.models import Prefetch
    from django.db.models.deletion import Collector
    from django.db.models.fields import related_descriptors

    if getattr(Collector.related_objects, "held_to_active_org", False):
        return
    collect_related = Collector.related_objects

    @functools.wraps(collect_related)
    def related_objects(self, related_model, related_fields, objs):
        return held_to_active_org(collect_related(self, related_model, related_fields, objs))

    def rows_of_type(content_type, using=None):
        return held_to_active_org(content_type.model_class()._base_manager.using(using).all())

    def get_object_for_this_type(self, using=None, **kwargs):
        return rows_of_type(self, using).get(**kwargs)

    def get_all_objects_for_this_type(self, **kwargs):
        return rows_of_type(self).filter(**kwargs)

    # prefetch_related_objects() called directly (not through a scoped queryset's
    # prefetch_related(), which refuses this when it is called): checked as each level runs.
    current_querysets = Prefetch.get_current_querysets

    def get_current_querysets(self, level):
        querysets = current_querysets(self, level)
        if querysets and current_org() not in (None, ALL_ORGS):
            refuse_unscoped_prefetch(self, "prefetch_related_objects")
        return querysets

    # agent.conversations.add(row): one UPDATE by key through the base manager (check_reverse_add).
    create_reverse_manager = related_descriptors.create_reverse_many_to_one_manager

    def create_reverse_many_to_one_manager(superclass, rel):
        manager_class = create_reverse_manager(superclass, rel)

        class CheckedRelatedManager(manager_class):
            def _apply_rel_filters(self, queryset):
                return held_to_instance_org(super()._apply_rel_filters(queryset), self.instance, self.field.name)

            def get_prefetch_querysets(self, instances, querysets=None):
                queryset, *rest = super().get_prefetch_querysets(instances, querysets)
                return (held_to_instance_org(queryset, instances[0], self.field.name), *rest)

            def add(self, *objs, bulk=True):
                if bulk:
                    check_reverse_add(self.field, self.instance, objs)
                return super().add(*objs, bulk=bulk)

            add.alters_data = True

        return CheckedRelatedManager

    # user.user_permissions (a join table with no organization): check_global_join_table_write, and
    # its reads held to the instance being the active organization's.
    create_many_manager = related_descriptors.create_forward_many_to_many_manager

    def create_forward_many_to_many_manager(superclass, rel, reverse):
        manager_class = create_many_manager(superclass, rel, reverse)

        class CheckedManyRelatedManager(manager_class):
            def _apply_rel_filters(self, queryset):
                queryset = super()._apply_rel_filters(queryset)
                return held_to_instance_org(queryset, self.instance, self.query_field_name, self.through)

            def get_prefetch_querysets(self, instances, querysets=None):
                queryset, *rest = super().get_prefetch_querysets(instances, querysets)
                return (held_to_instance_org(queryset, instances[0], self.query_field_name, self.through), *rest)

            def add(self, *objs, through_defaults=None):
                check_global_join_table_write(self, objs)
                return super().add(*objs, through_defaults=through_defaults)

            def remove(self, *objs):
                check_global_join_table_write(self, objs)
                return super().remove(*objs)

            def clear(self):
                check_global_join_table_write(self)
                return super().clear()

            add.alters_data = remove.alters_data = clear.alters_data = True

        return CheckedManyRelatedManager

    related_objects.held_to_active_org = True
    Collector.related_objects = related_objects
    related_descriptors.create_reverse_many_to_one_manager = create_reverse_many_to_one_manager
    related_descriptors.create_forward_many_to_many_manager = create_forward_many_to_many_manager
    Prefetch.get_current_querysets = get_current_querysets
    if apps.is_installed("django.contrib.contenttypes"):  # agentforge_core builds on no other app
        from django.contrib.contenttypes.models import ContentType

        ContentType.get_object_for_this_type = get_object_for_this_type
        ContentType.get_all_objects_for_this_type = get_all_objects_for_this_type


def held_to_instance_org(queryset, instance, path, through=None):
    """The rows of a global table reached from a tenant ``instance`` through a table with no
    organization (``user.logentry_set``, ``user.user_permissions``) held to that instance being
    the active organization's: one pointed at another organization's key reads none of its rows
    (row-level security does not see these tables). A tenant join table is held already."""
    field = scope_field(type(instance))
    if (
        field is None
        or scope_field(queryset.model) is not None
        or through is not None
        and scope_field(through) is not None
    ):
        return queryset
    return apply_org_scope(queryset, f"{path}__{'pk' if field.primary_key else field.name}", ActiveOrgIfAnyLookup)


def held_to_active_org(queryset):
    """``queryset`` restricted to the active organization when one is active (every row with
    none active, or inside ``unscoped()``): what row-level security makes of it on PostgreSQL,
    where a global table (no organization column) is not restricted either."""
    field = scope_field(queryset.model)
    if field is None:
        return queryset
    return apply_org_scope(queryset, "pk" if field.primary_key else field.name, ActiveOrgIfAnyLookup)


def instance_queryset(obj, using=None):
    """The queryset ``refresh_from_db()`` reads ``obj`` through: Django's (the base manager, by
    primary key, whatever the instance in hand says) held to the active organization."""
    return held_to_active_org(type(obj)._base_manager.db_manager(using, hints={"instance": obj}).all())


class OrgScopedManager(_OrgQuerySetManagerMixin, models.Manager.from_queryset(OrgScopedQuerySet)):
    """``Model.objects``: only the active organization's rows; raises when none is active.

    The error comes when the query runs (like any other database error), not when the
    queryset is built, so querysets made at import time (form choices) keep working.
    """

    def get_queryset(self):
        return apply_org_scope(super().get_queryset())


class AllOrgsManager(_OrgQuerySetManagerMixin, models.Manager.from_queryset(OrgScopedQuerySet)):
    """``Model.all_orgs``: every organization's rows, for system work."""


class HeldToActiveOrg:
    """Django's instance paths held to the active organization (a mixin before the model base).

    They go by primary key through the unscoped base manager: inside org_scope(A), an instance
    keyed to B's row must neither read it (``refresh_from_db``) nor update it (the save's
    UPDATE), nor delete it. OrgOwnedModel, User, Organization and AuditLog take it; the system
    check accounts.E005 refuses a tenant model without it."""

    def delete(self, *args, **kwargs):
        check_org_for_delete(self)
        return super().delete(*args, **kwargs)

    def refresh_from_db(self, using=None, fields=None, from_queryset=None):
        super().refresh_from_db(
            using, fields, instance_queryset(self, using) if from_queryset is None else from_queryset
        )

    def _do_update(self, base_qs, *args, **kwargs):
        return super()._do_update(held_to_active_org(base_qs), *args, **kwargs)


class OrgCheckedWrites:
    """A tenant row's organization checks (:func:`check_org_for_write`, :func:`check_org_links`) on
    every save: in ``save()``, before Django's own (whose refusal would mark an enclosing
    transaction for rollback), and for a deserialized object, which loaddata and
    ``serializers.deserialize()`` save through ``Model.save_base()`` directly, around the models'
    ``save()`` (:func:`check_raw_save`). OrgOwnedModel and User take it."""

    def save(self, *args, **kwargs):
        check_org_for_write(self)
        check_org_links([self], kwargs.get("update_fields"))
        super().save(*args, **kwargs)


def check_raw_save(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    """pre_save: a deserialized object's organization checks, where ``save()`` made none. Inside
    org_scope(A) one was written into B, or linked to B's rows. Connected in
    ``AgentforgeCoreConfig.ready()``."""
    if raw and isinstance(instance, OrgCheckedWrites):
        check_org_for_write(instance)
        check_org_links([instance], update_fields)


class OrgOwnedModel(OrgCheckedWrites, HeldToActiveOrg, models.Model):
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

    def delete(self, *args, **kwargs):
        check_org_for_write(self)
        return super().delete(*args, **kwargs)  # HeldToActiveOrg: the stored row's organization too

    def validate_unique(self, exclude=None):
        # Uniqueness is global in the database, so check it across organizations.
        with unscoped():
            super().validate_unique(exclude=exclude)

    def validate_constraints(self, exclude=None):
        with unscoped():
            super().validate_constraints(exclude=exclude)


def org_foreign_key(related_name: str, null: bool = False) -> models.ForeignKey:
    """The organization column, not indexed on its own: every tenant model declares an index
    leading with it (tests/test_schema.py), and on PostgreSQL and MariaDB the composite
    ``(org_id, id)`` key leads with it too, so a single-column index would only slow writes."""
    return models.ForeignKey(
        "accounts.Organization",
        on_delete=models.CASCADE,
        related_name=related_name,
        db_column="org_id",
        null=null,
        blank=null,
        editable=True,
        db_index=False,
    )


def org_index(table: str, *fields: str) -> models.Index:
    """An index leading with org_id, named within Oracle's 30-character limit."""
    suffix = "_".join(f.replace("_at", "").replace("_id", "")[:6] for f in fields)
    return models.Index(fields=["org", *fields], name=f"{table[:14]}_org_{suffix}"[:30])
