"""Mappers for the ``security`` tables: identity providers (OAuth, LDAP) and the audit trail
(``security/*.json``, docs/legacy-format.md §3)."""

from __future__ import annotations

from accounts.models import AuthProvider, Organization, Role, User
from agentforge_core import native
from legacy.format.jsonio import parse_timestamp
from legacy.format.mappers.base import (
    IPV4,
    Context,
    Mapped,
    Mapper,
    Row,
    extra_items,
    legacy_extra,
    omit_missing,
    record_shape,
    ts_out,
)
from legacy.format.mappers.common import DANGLING, finish_row, org_legacy_id, own_org_role, security_file_org
from security.models import AuditLog, LDAPConfig, OAuthConfig

# --- identity providers --------------------------------------------------------------------------


class OAuthConfigMapper(Mapper):
    model = OAuthConfig
    DEFAULTS = {
        "tenant_id": None,
        "scopes": [],
        "enabled": True,
        "auto_create_users": True,
        "update_profile_on_login": True,
        "default_role_id": "role_user",
        "allowed_domains": [],
        "client_secret": None,
    }

    def map_record(self, record, ctx):
        rec, lid, mapped, _ = self.begin(record)
        dangling = {}
        v = {
            "id": self.pk(lid),
            "legacy_id": lid,
            "org_id": security_file_org(rec, ctx, dangling),
            "provider": rec.enum("provider", AuthProvider.choices),
            "client_id": rec.str("client_id", "", max_length=255),
            "client_secret": rec.str("client_secret", None, null=True),
            "tenant_id": rec.str("tenant_id", None, null=True, max_length=255),
            "scopes": rec.list("scopes", []),
            "enabled": rec.bool("enabled", True),
            "auto_create_users": rec.bool("auto_create_users", True),
            "update_profile_on_login": rec.bool("update_profile_on_login", True),
            "allowed_domains": rec.list("allowed_domains", []),
        }
        role = rec.str("default_role_id", "role_user", null=True)
        v["default_role_id"] = own_org_role(ctx, role, v["org_id"]) if role else None
        if role is not None and v["default_role_id"] is None:
            dangling["default_role_id"] = role
        return finish_row(rec, v, OAuthConfig, mapped, dangling)

    def to_legacy(self, cfg, ctx=None):
        ctx = ctx or Context()
        extra = cfg.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        out = {
            "id": cfg.legacy_id or str(cfg.pk),
            "org_id": org_legacy_id(ctx, cfg),
            "provider": cfg.provider,
            "client_id": cfg.client_id,
            "client_secret": cfg.client_secret,
            "tenant_id": cfg.tenant_id,
            "scopes": cfg.scopes,
            "enabled": cfg.enabled,
            "auto_create_users": cfg.auto_create_users,
            "update_profile_on_login": cfg.update_profile_on_login,
            "default_role_id": ctx.legacy_id_of(Role, cfg.default_role_id)
            if cfg.default_role_id
            else dangling.get("default_role_id"),
            "allowed_domains": cfg.allowed_domains,
            "created_at": ts_out(cfg.created_at),
            "updated_at": ts_out(cfg.updated_at),
        }
        out.update(extra_items(extra))
        return omit_missing(out, extra, self.DEFAULTS)


LDAP_FIELDS = [
    # (legacy key, attname, kind, default)
    ("name", "name", "str", "LDAP"),
    ("server_url", "server_url", "str", ""),
    ("use_ssl", "use_ssl", "bool", False),
    ("use_tls", "use_tls", "bool", False),
    ("verify_ssl", "verify_ssl", "bool", True),
    ("connection_timeout", "connection_timeout", "int", 10),
    ("bind_dn", "bind_dn", "str", ""),
    ("bind_password", "bind_password", "ostr", None),
    ("base_dn", "base_dn", "str", ""),
    ("user_search_filter", "user_search_filter", "str", "(uid={username})"),
    ("user_search_base", "user_search_base", "ostr", None),
    ("user_object_class", "user_object_class", "str", ""),
    ("group_search_filter", "group_search_filter", "ostr", None),
    ("group_search_base", "group_search_base", "ostr", None),
    ("group_object_class", "group_object_class", "str", ""),
    ("attribute_mapping", "attribute_mapping", "dict", {}),
    ("group_role_mapping", "group_role_mapping", "dict", {}),
    ("sync_enabled", "sync_enabled", "bool", False),
    ("sync_interval_hours", "sync_interval_hours", "int", 24),
    ("sync_delete_removed", "sync_delete_removed", "bool", False),
    ("sync_update_existing", "sync_update_existing", "bool", True),
    ("last_sync", "last_sync", "ts", None),
    ("last_sync_status", "last_sync_status", "ostr", None),
    ("last_sync_users_synced", "last_sync_users_synced", "int", 0),
    ("is_active", "is_active", "bool", True),
    ("last_connection_test", "last_connection_test", "ts", None),
    ("last_error", "last_error", "ostr", None),
]


class LDAPConfigMapper(Mapper):
    model = LDAPConfig

    def map_record(self, record, ctx):
        rec, lid, mapped, _ = self.begin(record)
        dangling = {}
        v = {"id": self.pk(lid), "legacy_id": lid, "org_id": security_file_org(rec, ctx, dangling)}
        for key, attname, kind, default in LDAP_FIELDS:
            field = LDAPConfig._meta.get_field(attname)
            max_length = getattr(field, "max_length", None)
            if kind == "str":
                v[attname] = rec.str(key, default, max_length=max_length)
            elif kind == "ostr":
                v[attname] = rec.str(key, default, null=True, max_length=max_length)
            elif kind == "bool":
                v[attname] = rec.bool(key, default)
            elif kind == "int":
                v[attname] = rec.int(key, default)
            elif kind == "dict":
                v[attname] = rec.dict(key, default)
            else:
                v[attname] = rec.ts(key, default, null=True)
        v["connection_status"] = rec.enum("connection_status", LDAPConfig.ConnectionStatus.choices, "unknown")
        role = rec.str("default_role_id", "role_user", null=True)
        v["default_role_id"] = own_org_role(ctx, role, v["org_id"]) if role else None
        if role is not None and v["default_role_id"] is None:
            dangling["default_role_id"] = role
        org_ldap = ctx.raw.get("org_ldap")
        if org_ldap is not None:
            v["is_org_directory"] = lid in org_ldap
        return finish_row(rec, v, LDAPConfig, mapped, dangling)

    def to_legacy(self, cfg, ctx=None):
        ctx = ctx or Context()
        extra = cfg.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        out = {"id": cfg.legacy_id or str(cfg.pk), "org_id": org_legacy_id(ctx, cfg)}
        defaults = {}
        for key, attname, kind, default in LDAP_FIELDS:
            value = getattr(cfg, attname)
            out[key] = ts_out(value) if kind == "ts" else value
            defaults[key] = default
        out["connection_status"] = cfg.connection_status
        out["default_role_id"] = (
            ctx.legacy_id_of(Role, cfg.default_role_id) if cfg.default_role_id else dangling.get("default_role_id")
        )
        out["created_at"], out["updated_at"] = ts_out(cfg.created_at), ts_out(cfg.updated_at)
        defaults.update(connection_status="unknown", default_role_id="role_user")
        out.update(extra_items(extra))
        return omit_missing(out, extra, defaults)


# --- audit logs -------------------------------------------------------------------------------------

AUDIT_ACTIONS = {
    "login",
    "logout",
    "login_failed",
    "password_change",
    "password_reset",
    "mfa_enabled",
    "mfa_disabled",
    "create",
    "read",
    "update",
    "delete",
    "execute",
    "export",
    "import",
    "share",
    "publish",
    "invite",
    "settings_change",
}
AUDITLOG_ACTION = {"create": 0, "update": 1, "delete": 2}
AUDIT_DEFAULTS = {
    "session_id": None,
    "resource_id": None,
    "resource_name": None,
    "details": {},
    "changes": None,
    "ip_address": None,
    "user_agent": None,
    "request_id": None,
    "request_path": None,
    "request_method": None,
    "success": True,
    "error_message": None,
    "user_email": "",
    "user_name": "",
    "org_id": None,
}
_TEXT, _OPTIONAL = native.SHAPE_TEXT, native.SHAPE_OPT_TEXT
# The plain path's entry: exactly the usual keys; lengths are the columns' (AuditLogMapper._map_plain)
PLAIN_AUDIT_ENTRY = record_shape(
    (
        ("id", native.SHAPE_ID, 128),
        ("org_id", native.SHAPE_ANY, 0),
        ("user_id", _OPTIONAL, 128),
        ("action", _TEXT, 0),
        ("resource_type", _TEXT, 40),
        ("user_name", _TEXT, 255),
        ("success", native.SHAPE_BOOL, 0),
        ("timestamp", _TEXT, 0),
        ("resource_id", _OPTIONAL, 255),
        ("resource_name", _OPTIONAL, 0),
        ("user_email", _OPTIONAL, 254),
        ("user_agent", _OPTIONAL, 0),
        ("session_id", _OPTIONAL, 128),
        ("request_id", _OPTIONAL, 128),
        ("request_path", _OPTIONAL, 0),
        ("request_method", _OPTIONAL, 10),
        ("error_message", _OPTIONAL, 0),
        ("ip_address", native.SHAPE_ANY, 0),
        ("details", native.SHAPE_ANY, 0),
        ("changes", native.SHAPE_ANY, 0),
    )
)
# AgentForge's ResourceType; an entry written here about another table is exported under its parent.
AGENTFORGE_RESOURCE_TYPES = {
    "user",
    "role",
    "policy",
    "agent",
    "tool",
    "knowledge_base",
    "database",
    "document",
    "conversation",
    "settings",
    "organization",
    "department",
    "group",
    "invitation",
    "session",
}
RESOURCE_PARENTS = {
    "passwordhistory": "user",
    "mfasettings": "user",
    "userrole": "user",
    "userpreference": "user",
    "groupmembership": "group",
    "grouprole": "group",
    "rolepermission": "role",
    "permission": "role",
    "toolpermission": "tool",
    "agenttool": "agent",
    "agentversion": "agent",
    "documentchunk": "document",
    "message": "conversation",
    "attachment": "conversation",
}


def _agentforge_shaped(out: dict) -> None:
    """An entry written here (a sign-in, a model change) in the shape AgentForge's AuditLog model
    accepts, so its loader keeps it after a rollback: required strings and its resource types
    (the table's own type stays in ``details``). Entries imported from AgentForge never need this."""
    out["org_id"] = out["org_id"] or "org_default"  # a sign-in with an unknown email has no organization
    for key in ("user_id", "user_email", "user_name"):
        out[key] = out[key] or ""
    out["details"] = out["details"] or {}  # a dict there, never null
    if out["resource_type"] not in AGENTFORGE_RESOURCE_TYPES:
        out["details"] = {**(out["details"] or {}), "resource_type": out["resource_type"]}
        out["resource_type"] = RESOURCE_PARENTS.get(out["resource_type"], "settings")


class AuditLogMapper(Mapper):
    """A list of entries → ``security.AuditLog`` (django-auditlog's model, extended).

    Keys without a column, a dangling org and bad IP addresses go to ``serialized_data``
    (``{"legacy_extra": ...}``), which auditlog leaves empty for these entries.
    """

    model = AuditLog
    pipeline = True  # big and plain: read and mapped in a second process (legacy.migration.pipeline)

    def map_record(self, record, ctx):
        mapped = self._map_plain(record, ctx)
        if mapped is not None:
            return mapped
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        org_legacy = rec.str("org_id", None, null=True)
        org_id = ctx.ref(Organization, org_legacy) if org_legacy else None
        if org_legacy is not None and org_id is None:
            dangling["org_id"] = org_legacy
            mapped.warnings.append(f"{where}: org_id: {org_legacy!r} refers to no organization")
        user_legacy = rec.str("user_id", None, null=True, max_length=128)
        action = rec.str("action", max_length=40)
        if action not in AUDIT_ACTIONS:
            mapped.warnings.append(f"{where}: action: unknown value {action!r} (kept)")
        ip, bad_ip = rec.ip("ip_address")
        if bad_ip is not None:
            dangling["ip_address"] = bad_ip
        resource_id = rec.str("resource_id", None, null=True, max_length=255)
        resource_name = rec.str("resource_name", None, null=True)
        v = {
            "legacy_id": lid,
            "org_id": org_id,
            "content_type_id": None,
            "object_pk": resource_id or "",
            "object_id": None,
            "object_repr": resource_name or "",
            "serialized_data": None,
            "action": AUDITLOG_ACTION.get(action, 3),
            "changes_text": "",
            "changes": rec.json("changes", None),
            "actor_id": ctx.ref(User, user_legacy) if user_legacy else None,
            "cid": None,
            "remote_addr": ip,
            "remote_port": None,
            "timestamp": rec.ts("timestamp"),
            "additional_data": rec.json("details", {}),
            "actor_email": rec.str("user_email", "", null=True, max_length=254),
            "legacy_user_id": user_legacy,
            "legacy_action": action,
            "resource_type": rec.str("resource_type", "", max_length=40),
            "resource_id": resource_id,
            "resource_name": resource_name,
            "user_name": rec.str("user_name", "", null=True, max_length=255),
            "user_agent": rec.str("user_agent", None, null=True),
            "session_id": rec.str("session_id", None, null=True, max_length=128),
            "request_id": rec.str("request_id", None, null=True, max_length=128),
            "request_path": rec.str("request_path", None, null=True),
            "request_method": rec.str("request_method", None, null=True, max_length=10),
            "success": rec.bool("success", True),
            "error_message": rec.str("error_message", None, null=True),
        }
        if v["user_name"] is None:
            v["user_name"] = ""
            dangling["user_name"] = None
        if user_legacy and v["actor_id"] is None:  # "": no user (AuditService._db_to_core_log)
            mapped.warnings.append(f"{where}: user_id: {user_legacy!r} refers to no user")
        extra = legacy_extra(rec, **{DANGLING: dangling or None})
        v["serialized_data"] = {"legacy_extra": extra} if extra else None
        mapped.rows.append(Row(AuditLog, v, key_fields=("legacy_id",)))
        return mapped

    def _map_plain(self, record, ctx):
        """The hot path: an entry with exactly the usual keys, well-typed, resolving references,
        canonical IPv4 or none, nothing to warn about. Returns the same Mapped as the generic
        code below, or None for anything else (the generic code then validates and reports);
        tests/test_import_fast_paths.py holds the two equal."""
        values = PLAIN_AUDIT_ENTRY(record)
        if values is None:
            return None
        (
            lid,
            org_legacy,
            user_legacy,
            action,
            resource_type,
            user_name,
            success,
            stamp,
            resource_id,
            resource_name,
            user_email,
            user_agent,
            session_id,
            request_id,
            request_path,
            request_method,
            error_message,
            ip,
            details,
            changes,
        ) = values
        if action not in AUDIT_ACTIONS:
            return None
        serialized = None
        if ip == "":  # no address, as AgentForge's database converter writes it: kept for the export
            ip, serialized = None, {"legacy_extra": {DANGLING: {"ip_address": ""}}}
        elif ip is not None and (type(ip) is not str or not IPV4.fullmatch(ip)):
            return None
        if org_legacy is None:
            org_id = None
        elif type(org_legacy) is not str or not org_legacy or (org_id := ctx.ref(Organization, org_legacy)) is None:
            return None
        actor_id = ctx.ref(User, user_legacy) if user_legacy else None
        if user_legacy and actor_id is None:
            return None
        try:
            timestamp = parse_timestamp(stamp)
        except ValueError:
            return None
        # same keys in the same order as the generic path (warnings list fields in this order)
        v = {
            "legacy_id": lid,
            "org_id": org_id,
            "content_type_id": None,
            "object_pk": resource_id or "",
            "object_id": None,
            "object_repr": resource_name or "",
            "serialized_data": serialized,
            "action": AUDITLOG_ACTION.get(action, 3),
            "changes_text": "",
            "changes": changes,
            "actor_id": actor_id,
            "cid": None,
            "remote_addr": ip,
            "remote_port": None,
            "timestamp": timestamp,
            "additional_data": details,
            "actor_email": user_email,
            "legacy_user_id": user_legacy,
            "legacy_action": action,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "resource_name": resource_name,
            "user_name": user_name,
            "user_agent": user_agent,
            "session_id": session_id,
            "request_id": request_id,
            "request_path": request_path,
            "request_method": request_method,
            "success": success,
            "error_message": error_message,
        }
        return Mapped(lid, rows=[Row(AuditLog, v, key_fields=("legacy_id",))])

    def to_legacy(self, entry, ctx=None):
        ctx = ctx or Context()
        extra = (entry.serialized_data or {}).get("legacy_extra") or {}
        dangling = extra.get(DANGLING) or {}
        out = {
            "id": entry.legacy_id or str(entry.pk),
            "org_id": ctx.legacy_id_of(Organization, entry.org_id) if entry.org_id else dangling.get("org_id"),
            "user_id": entry.legacy_user_id
            if entry.legacy_user_id is not None
            else (ctx.legacy_id_of(User, entry.actor_id) if entry.actor_id else None),
            "user_email": entry.actor_email,
            "user_name": None if "user_name" in dangling else entry.user_name,
            "session_id": entry.session_id,
            "action": entry.legacy_action or {0: "create", 1: "update", 2: "delete"}.get(entry.action, "read"),
            "resource_type": entry.resource_type,
            "resource_id": entry.resource_id,
            "resource_name": entry.resource_name,
            "details": entry.additional_data,
            "changes": entry.changes,
            "ip_address": entry.remote_addr or dangling.get("ip_address"),
            "user_agent": entry.user_agent,
            "request_id": entry.request_id,
            "request_path": entry.request_path,
            "request_method": entry.request_method,
            "success": entry.success,
            "error_message": entry.error_message,
            "timestamp": ts_out(entry.timestamp),
        }
        if entry.legacy_id is None:
            _agentforge_shaped(out)
        out.update(extra_items(extra))
        return omit_missing(out, extra, AUDIT_DEFAULTS)

    def export_queryset(self):
        from django.db.models import Q

        return AuditLog.all_orgs.filter(Q(legacy_id__isnull=False) | ~Q(legacy_action="")).order_by("timestamp", "id")
