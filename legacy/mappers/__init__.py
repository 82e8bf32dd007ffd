"""The legacy JSON format, in one place: one mapper per collection, both directions.

A *collection* is a legacy file path without ``.json``: ``"security/users"``,
``"agents"``, ``"chunks_index"``, ``"settings"``... ``registry`` maps each to its mapper::

    from legacy.mappers import registry, Context

    mapper = registry["security/users"]
    mapped = mapper.to_rows(record)          # one legacy dict -> Mapped
    mapped.rows        # [Row(model, values, key_fields)]: User, MFASettings, UserPreference
    mapped.children    # [ChildSet(model, parent_field, parent_value, rows)]: user_roles, password_history
    mapped.warnings    # dangling references, outer key != id, ... (not fatal)
    mapper.to_legacy(user_instance)          # model instance -> legacy dict (export)

``to_rows`` validates types and raises :class:`legacy.errors.LegacyDataError` naming the
file, the record and the field (``security/users.json: record 85900a07-…: email:
expected a string, got 12345``). It reads leniently: keys of another era get the model
default and are remembered in ``legacy_extra["__missing__"]`` so ``to_legacy`` leaves them
out again; unknown keys and dangling references are kept in ``legacy_extra``.

``Row.values`` are attnames with Python values (UUID primary keys from
``legacy_uuid(table, legacy_id)``, aware datetimes, plaintext secrets that the encrypted
fields encrypt on write). :func:`legacy.writer.write_mapped` writes them (upsert by
``Row.key_fields``; a ChildSet replaces the parent's children when they differ).

A :class:`Context` tells a mapper which referenced ids exist (ids of the files being
imported, else the database) and carries cross-file data (``ctx.raw["user_groups"]``:
group id -> users naming it in ``group_ids``; ``ctx.raw["org_ldap"]``: LDAP config ids
named by organizations). Without one, ``Context()`` looks references up in the database,
which is what a single-record caller (the dual-write store) wants.

Containers: ``mapper.container`` is ``"dict"`` (id → record), ``"list"`` (audit logs,
chunk index) or ``"object"`` (``security/settings``, ``settings``, ``integrations``: the
whole file is one record; these mappers have ``export(ctx)`` instead of ``to_legacy``).
``ORDER`` is the import order (referenced collections first).
"""

from __future__ import annotations

from legacy.mappers.app import (
    AgentMapper,
    ChunkIndexMapper,
    ConversationMapper,
    DocumentMapper,
    IntegrationsMapper,
    LabMapper,
    LegacyRecordMapper,
    ScrapedPageMapper,
    SystemSettingsMapper,
    ToolMapper,
)
from legacy.mappers.base import ChildSet, Context, Mapped, Mapper, Row  # noqa: F401
from legacy.mappers.security import (
    AuditLogMapper,
    DepartmentMapper,
    GroupMapper,
    LDAPConfigMapper,
    OAuthConfigMapper,
    OrganizationMapper,
    RoleMapper,
    SecuritySettingsMapper,
    ToolPermissionMapper,
    UserMapper,
)

_MAPPERS = [
    OrganizationMapper(),
    LDAPConfigMapper(),
    RoleMapper(),
    DepartmentMapper(),
    UserMapper(),
    GroupMapper(),
    OAuthConfigMapper(),
    SecuritySettingsMapper(),
    ToolMapper(),
    ToolPermissionMapper(),
    LegacyRecordMapper("security/policies"),
    LegacyRecordMapper("security/invitations"),
    LegacyRecordMapper("security/kb_permissions"),
    LegacyRecordMapper("security/db_permissions"),
    AgentMapper(),
    DocumentMapper(),
    ScrapedPageMapper(),
    ChunkIndexMapper(),
    ConversationMapper(),
    AuditLogMapper(),
    SystemSettingsMapper(),
    IntegrationsMapper(),
]

registry: dict[str, Mapper] = {m.collection: m for m in _MAPPERS}
ORDER: list[str] = [m.collection for m in _MAPPERS]
lab = LabMapper()

__all__ = ["registry", "ORDER", "lab", "Context", "Mapped", "Mapper", "Row", "ChildSet"]
