"""``STORAGE_MODE=database``: the database only, through the import mappers.

A save maps the legacy dict with the same mapper ``import_json`` uses
(``legacy.format.mappers.registry[collection].to_rows``) and writes the rows with the importer's
writer; a read turns the rows back into a legacy dict with the mapper's ``to_legacy``, the
exact form ``export_json`` writes.

Organization scoping (``agentforge_core.tenancy``):

* inside ``org_scope(org)``: reads return only that organization's records (others look
  missing), and saving or deleting a record of another organization raises
  ``OrgScopeError``. App records (agents, tools, documents, conversations...) carry no
  ``org_id`` in the legacy format and belong to ``org_default``;
* inside ``unscoped()``: every organization, deliberately;
* with no organization active: system use, as in the JSON-era application (which had no
  tenancy for its app files): every organization. Pass ``strict=True`` (or use
  ``get_store`` inside request code, where the middleware sets a scope) to fail closed
  instead.
"""

from __future__ import annotations

import uuid

from django.db import IntegrityError, transaction
from django.db.models import Q

from agentforge_core.tenancy import ALL_ORGS, OrgScopeError, current_org, unscoped
from legacy.format.collections import LEGACY_COLLECTIONS
from legacy.migration.writer import write_mapped
from legacy.store.jsonfiles import COLLECTIONS, UnknownCollection

# Collections the database side handles record by record (legacy.format.collections says which).
DB_COLLECTIONS = tuple(c for c in COLLECTIONS if LEGACY_COLLECTIONS[c].in_database_store)


class AppendOnlyError(Exception):
    """Audit log entries are append-only in the database: no update, no delete."""


def check_mapped_links(mapped) -> None:
    """The organization invariant the ORM checks on save, for rows the writer puts in with SQL:
    no row of the record (its child rows included) links to another organization's row."""
    from agentforge_core.models import check_org_links

    def instances(model, rows):
        names = {f.attname for f in model._meta.concrete_fields}
        return [model(**{k: v for k, v in values.items() if k in names}) for values in rows]

    for row in mapped.rows:
        check_org_links(instances(row.model, [row.values]))
    for child in mapped.children:
        check_org_links(instances(child.model, child.rows))


def check_mapped_owners(mapped, active) -> None:
    """Refuse a record whose rows the writer would find in another organization.

    The writer matches each row by its key (the primary key for most: a record id that is a
    UUID is kept as the key, docs/import.md) and updates what it finds, the organization
    included; a child set replaces the children of its parent. A legacy id alone does not
    name the row: one made through the ORM has none. One query per row and child set.
    """
    from agentforge_core.models import scope_field

    def owners(model, lookup):
        field = scope_field(model)
        if field is None:
            return set()
        manager = getattr(model, "all_orgs", None) or model._base_manager
        return set(manager.filter(**lookup).values_list(field.attname, flat=True))

    found = set()
    for row in mapped.rows:
        if None not in row.key:  # no key: a new row
            found |= owners(row.model, dict(zip(row.key_fields, row.key)))
    for child in mapped.children:
        parent = next(f for f in child.model._meta.concrete_fields if f.attname == child.parent_field)
        found |= owners(parent.related_model, {"pk": child.parent_value})
    if any(owner != active for owner in found):
        raise OrgScopeError(f"{mapped.legacy_id}: a row of this record belongs to another organization")


def add_missing_permissions(collection: str, record: dict) -> None:
    """Before a role is saved: the permission catalog rows its permission strings need,
    created as the importer creates them (through its writer, no audit entries)."""
    if collection != "security/roles":
        return
    from django.utils import timezone

    from accounts.models import Permission
    from legacy.format.mappers import Mapped, Row
    from legacy.format.mappers.accounts import permission_codes
    from legacy.migration.writer import Writer

    codes = sorted(permission_codes({"record": record}))
    known = set(Permission.objects.filter(codename__in=codes).values_list("codename", flat=True))
    missing = [code for code in codes if code not in known]
    if missing:
        writer = Writer(now=timezone.now())
        writer.add(
            Mapped("permissions", rows=[Row(Permission, {"codename": c}, key_fields=("codename",)) for c in missing])
        )
        writer.flush()


def context_for(collection: str, record: dict):
    """A mapper Context for one record: what ``import_json`` gathers from whole files,
    read from the database instead (it writes nothing).

    * roles: the permission catalog rows for the role's permission strings
      (:func:`add_missing_permissions` creates the new ones first);
    * groups: members that name the group in their own ``group_ids`` (membership is
      two-sided, docs/legacy-format.md §3.5), so saving a group keeps them.
    """
    from legacy.format.mappers import Context

    ctx = Context()
    if collection == "security/roles":
        from accounts.models import Permission
        from legacy.format.mappers.accounts import permission_codes

        codes = sorted(permission_codes({"record": record}))
        ctx.permission_ids.update(Permission.objects.filter(codename__in=codes).values_list("codename", "pk"))
    elif collection == "security/groups" and isinstance(record.get("id"), str):
        from accounts.models import GroupMembership, User
        from legacy.format.mappers.common import LISTS

        group_pk = mapper_pk(collection, record["id"])
        claimed = []
        members = GroupMembership.all_orgs.filter(group_id=group_pk).values("user_id")
        for legacy_id, book in User.all_orgs.filter(pk__in=members).values_list("legacy_id", "legacy_extra"):
            if legacy_id and record["id"] in (((book or {}).get(LISTS) or {}).get("group_ids") or ()):
                claimed.append(legacy_id)
        ctx.raw["user_groups"] = {record["id"]: claimed}
    return ctx


def mapper_pk(collection: str, legacy_id: str):
    from legacy.format.mappers import registry

    return registry[collection].pk(legacy_id)


class DatabaseStore:
    mode = "database"

    def __init__(self, strict: bool = False):
        self.strict = strict

    # --- helpers ----------------------------------------------------------------------------

    def mapper(self, collection: str):
        from legacy.format.mappers import registry

        if collection not in DB_COLLECTIONS or collection not in registry:
            raise UnknownCollection(collection)
        return registry[collection]

    def _active(self):
        """The active organization's id, ALL_ORGS, or None for unscoped system use."""
        active = current_org()
        if active is None and self.strict:
            raise OrgScopeError("the store is strict and no organization is active: use org_scope(org)")
        return None if active is ALL_ORGS else active

    @staticmethod
    def _org_of_instance(instance):
        from accounts.models import Organization

        if isinstance(instance, Organization):
            return instance.pk
        return getattr(instance, "org_id", None)

    @staticmethod
    def _org_of_mapped(mapper, mapped):
        from accounts.models import Organization

        main = mapped.rows[0].values
        if mapper.model is Organization:
            return main["id"]
        return main.get("org_id")

    def _queryset(self, mapper, active):
        from accounts.models import Organization

        queryset = mapper.model._base_manager.all()
        if mapper.model.__name__ == "LegacyRecord":
            queryset = queryset.filter(collection=mapper.collection)
        if active is not None:
            queryset = queryset.filter(pk=active) if mapper.model is Organization else queryset.filter(org_id=active)
        return queryset

    def _find(self, mapper, record_id, active):
        record_id = str(record_id)
        queryset = self._queryset(mapper, active)
        match = Q(legacy_id=record_id)
        pk_field = mapper.model._meta.pk
        if pk_field.get_internal_type() == "UUIDField":
            try:
                match |= Q(pk=uuid.UUID(record_id), legacy_id__isnull=True)
            except ValueError:
                pass
        return queryset.filter(match).first()

    # --- the store API ------------------------------------------------------------------------

    def save(self, collection: str, record: dict) -> str:
        """Map and write one record in a transaction; return its legacy id."""
        mapper = self.mapper(collection)
        active = self._active()
        with transaction.atomic(), unscoped():
            add_missing_permissions(collection, record)
            ctx = context_for(collection, record)
            mapped = mapper.to_rows(record, ctx)
        if active is not None and self._org_of_mapped(mapper, mapped) != active:
            raise OrgScopeError(f"{collection}: record {mapped.legacy_id} belongs to another organization")
        try:
            return self._write(collection, mapper, mapped, record, active)
        except IntegrityError:
            # Another process inserted the same record between our read and our insert
            # (two writers saving one new agent): the second try finds it and updates.
            return self._write(collection, mapper, mapped, record, active)

    def _write(self, collection, mapper, mapped, record, active) -> str:
        from legacy.format.mappers import Context

        with transaction.atomic(), unscoped():
            if LEGACY_COLLECTIONS[collection].append_only:
                existing = self._find(mapper, mapped.legacy_id, None)
                if existing is not None:
                    # The JSON-era logger only appended: saving an entry again is a no-op,
                    # changing one is refused.
                    stored = mapper.to_legacy(existing, Context())
                    if any(stored.get(key) != value for key, value in record.items()):
                        raise AppendOnlyError(
                            f"{collection}: entry {mapped.legacy_id} exists and differs; audit entries are append-only"
                        )
                    return mapped.legacy_id
            if active is not None:
                # Refuse to take over a row of another organization under the same id.
                other = mapper.model._base_manager.filter(legacy_id=mapped.legacy_id)
                if mapper.model.__name__ == "LegacyRecord":
                    other = other.filter(collection=collection)
                other = other.first()
                if other is not None and self._org_of_instance(other) != active:
                    raise OrgScopeError(f"{collection}: record {mapped.legacy_id} belongs to another organization")
                # Nor finds, under the record's id, a row of another organization (made
                # through the ORM, it has no legacy id for the check above).
                check_mapped_owners(mapped, active)
                # An organization's code never links its rows to another organization's
                # (unscoped system work mirrors the JSON files as import_json does).
                check_mapped_links(mapped)
            write_mapped(mapped)
        return mapped.legacy_id

    def get(self, collection: str, record_id) -> dict | None:
        from legacy.format.mappers import Context

        mapper = self.mapper(collection)
        active = self._active()
        with unscoped():
            instance = self._find(mapper, record_id, active)
            return None if instance is None else mapper.to_legacy(instance, Context())

    def exists(self, collection: str, record_id) -> bool:
        mapper = self.mapper(collection)
        active = self._active()
        with unscoped():
            return self._find(mapper, record_id, active) is not None

    def delete(self, collection: str, record_id) -> bool:
        mapper = self.mapper(collection)
        if LEGACY_COLLECTIONS[collection].append_only:
            raise AppendOnlyError(f"{collection}: audit entries are append-only")
        active = self._active()
        with transaction.atomic(), unscoped():
            instance = self._find(mapper, record_id, active)
            if instance is None:
                return False
            if collection == "agents":
                # AgentForge's delete_agent dropped the agent's conversations with it.
                from conversations.models import Conversation

                Conversation.all_orgs.filter(agent_id=instance.pk).delete()
            instance.delete()
            return True

    def all(self, collection: str) -> list[dict]:
        from legacy.format.mappers import Context

        mapper = self.mapper(collection)
        ctx = Context()
        active = self._active()
        with unscoped():
            queryset = mapper.store_queryset()
            if active is not None:
                allowed = self._queryset(mapper, active).values("pk")
                queryset = queryset.filter(pk__in=allowed)
            return [mapper.to_legacy(instance, ctx) for instance in queryset.iterator(chunk_size=500)]
