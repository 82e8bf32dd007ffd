"""The legacy JSON format, in one place: one mapper per collection, both directions.

A *collection* is a legacy file path without ``.json``: ``"security/users"``,
``"agents"``, ``"chunks_index"``, ``"settings"``... ``registry`` maps each collection of
``legacy.format.collections.LEGACY_COLLECTIONS`` to its mapper, in import order::

    from legacy.format.mappers import registry, Context

    mapper = registry["security/users"]
    mapped = mapper.to_rows(record)          # one legacy dict -> Mapped
    mapped.rows        # [Row(model, values, key_fields)]: User, MFASettings, UserPreference
    mapped.children    # [ChildSet(model, parent_field, parent_value, rows)]: user_roles, password_history
    mapped.warnings    # dangling references, outer key != id, ... (not fatal)
    mapper.to_legacy(user_instance)          # model instance -> legacy dict (export)

``to_rows`` validates types and raises :class:`legacy.format.errors.LegacyDataError` naming the
file, the record and the field (``security/users.json: record 85900a07-…: email:
expected a string, got 12345``). It reads leniently: keys of another era get the model
default and are remembered in ``legacy_extra["__missing__"]`` so ``to_legacy`` leaves them
out again; unknown keys and dangling references are kept in ``legacy_extra``.

``Row.values`` are attnames with Python values (UUID primary keys from
``legacy_uuid(table, legacy_id)``, aware datetimes, plaintext secrets that the encrypted
fields encrypt on write). :func:`legacy.migration.writer.write_mapped` writes them (upsert by
``Row.key_fields``; a ChildSet replaces the parent's children when they differ).

A :class:`Context` tells a mapper which referenced ids exist (ids of the files being
imported, else the database) and carries cross-file data (``ctx.raw["user_groups"]``:
group id -> users naming it in ``group_ids``; ``ctx.raw["org_ldap"]``: LDAP config ids
named by organizations). Without one, ``Context()`` looks references up in the database,
which is what a single-record caller (the dual-write store) wants.

Containers (``mapper.container``, from the collection's entry): ``"dict"`` (id → record),
``"list"`` or ``"object"`` (the whole file is one record; these mappers have
``export(ctx)`` instead of ``to_legacy``).

One module per target app, whichever legacy folder the file sits in: ``accounts``,
``security``, ``agents``, ``knowledge``, ``conversations``, ``settings`` (settings_app) and
``legacy_records`` (the legacy app's own table). The machinery is in ``base``; helpers
several of them share (organizations, dangling references) in ``common``.
"""

from __future__ import annotations

from django.utils.module_loading import import_string

from legacy.format.collections import LEGACY_COLLECTIONS
from legacy.format.mappers.base import ChildSet, Context, Mapped, Mapper, Row  # noqa: F401
from legacy.format.mappers.legacy_records import LabMapper

registry: dict[str, Mapper] = {
    name: import_string(collection.mapper)(collection) for name, collection in LEGACY_COLLECTIONS.items()
}
lab = LabMapper()

__all__ = ["registry", "lab", "Context", "Mapped", "Mapper", "Row", "ChildSet"]
