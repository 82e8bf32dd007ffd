"""Every legacy collection, once: its file, its container, how it is read, its mapper.

A *collection* is a legacy file path without ``.json`` (``"security/users"``,
``"agents"``). ``LEGACY_COLLECTIONS`` is the one list of them, in import order (referenced
collections first); the importer, the exporter, the stores and ``verify_parity`` derive
what they handle from it, and ``legacy.format.mappers.registry`` builds each collection's
mapper from it. The mapper owns the target models (``mapper.model`` and its
``satellites``). A new legacy file is one entry here plus its mapper
(tests/test_legacy_collections.py checks that nothing is left out).

This module imports nothing from Django: the JSON store and ``/health/`` load it before
the application registry is ready.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LegacyCollection:
    name: str
    # Dotted path of the mapper class; ``legacy.format.mappers`` instantiates it with this entry.
    mapper: str
    # "dict" (an object keyed by record id), "list" (records in order) or "object"
    # (the whole file is one record: settings files).
    container: str = "dict"
    # May be huge: read record by record and written in batches, never loaded whole.
    streamed: bool = False
    # Other files refer to its ids: the import collects them before writing anything.
    referenced: bool = False
    # The database store saves and reads its records one by one. chunks_index is a
    # retrieval index sharing rows with documents[].chunks: the JSON store's only.
    in_database_store: bool = True
    # AgentForge wrote it without indentation, every record on one line.
    one_line: bool = False
    # Records are only ever appended (the audit trail): the stores refuse to change or delete one.
    append_only: bool = False

    @property
    def file(self) -> str:
        return file_label(self.name)

    @property
    def is_security(self) -> bool:
        return is_security(self.name)

    @property
    def ensure_ascii(self) -> bool:
        """AgentForge's security files keep non-ASCII text; its app files escape it."""
        return not self.is_security


def file_label(name: str) -> str:
    return f"{name}.json"


def is_security(name: str) -> bool:
    return name.startswith("security/")


# Mappers live in one module per target app: legacy.format.mappers.<app>.<Mapper>.
_MAPPERS = "legacy.format.mappers."

LEGACY_COLLECTIONS: dict[str, LegacyCollection] = {
    c.name: c
    for c in (
        LegacyCollection("security/organizations", _MAPPERS + "accounts.OrganizationMapper", referenced=True),
        LegacyCollection("security/ldap_configs", _MAPPERS + "security.LDAPConfigMapper", referenced=True),
        LegacyCollection("security/roles", _MAPPERS + "accounts.RoleMapper", referenced=True),
        LegacyCollection("security/departments", _MAPPERS + "accounts.DepartmentMapper", referenced=True),
        LegacyCollection("security/users", _MAPPERS + "accounts.UserMapper", referenced=True),
        LegacyCollection("security/groups", _MAPPERS + "accounts.GroupMapper", referenced=True),
        LegacyCollection("security/oauth_configs", _MAPPERS + "security.OAuthConfigMapper"),
        LegacyCollection("security/settings", _MAPPERS + "settings.SecuritySettingsMapper", container="object"),
        LegacyCollection("tools", _MAPPERS + "agents.ToolMapper", referenced=True),
        LegacyCollection("security/tool_permissions", _MAPPERS + "agents.ToolPermissionMapper"),
        LegacyCollection("security/policies", _MAPPERS + "legacy_records.LegacyRecordMapper"),
        LegacyCollection("security/invitations", _MAPPERS + "legacy_records.LegacyRecordMapper"),
        LegacyCollection("security/kb_permissions", _MAPPERS + "legacy_records.LegacyRecordMapper"),
        LegacyCollection("security/db_permissions", _MAPPERS + "legacy_records.LegacyRecordMapper"),
        LegacyCollection("agents", _MAPPERS + "agents.AgentMapper", referenced=True),
        LegacyCollection("documents", _MAPPERS + "knowledge.DocumentMapper", streamed=True, referenced=True),
        LegacyCollection("scraped_pages", _MAPPERS + "knowledge.ScrapedPageMapper", streamed=True, referenced=True),
        LegacyCollection(
            "chunks_index",
            _MAPPERS + "knowledge.ChunkIndexMapper",
            container="list",
            streamed=True,
            in_database_store=False,
            one_line=True,
        ),
        LegacyCollection("conversations", _MAPPERS + "conversations.ConversationMapper", streamed=True),
        LegacyCollection(
            "security/audit_logs",
            _MAPPERS + "security.AuditLogMapper",
            container="list",
            streamed=True,
            append_only=True,
        ),
        LegacyCollection("settings", _MAPPERS + "settings.SystemSettingsMapper", container="object"),
        LegacyCollection("integrations", _MAPPERS + "settings.IntegrationsMapper", container="object"),
    )
}
