"""Mappers for ``<data_dir>/security/*.json`` (docs/legacy-format.md §3)."""

from __future__ import annotations

from django.db.models import Prefetch
from django.utils.text import slugify

from agentforge_core.models import legacy_uuid
from accounts.models import (
    AuthProvider,
    Department,
    Group,
    GroupMembership,
    GroupRole,
    MFASettings,
    Organization,
    PasswordHistory,
    Role,
    RolePermission,
    User,
    UserRole,
    normalize_email_address,
)
from legacy import passwords
from legacy.mappers.base import (
    MISSING_KEY,
    ChildSet,
    Context,
    Mapped,
    Mapper,
    Rec,
    Row,
    choices_of,
    extra_items,
    legacy_extra,
    omit_missing,
    ts_out,
)
from legacy.jsonio import parse_timestamp
from legacy.mappers.base import _IPV4
from legacy.mappers.common import DANGLING, LISTS, original_or_current, rebuild_list, ref_or_keep, split_refs
from agentforge_core.crypto import sha256_hex
from security.models import AuditLog, LDAPConfig, OAuthConfig
from settings_app.models import OrgSetting, SystemSetting, infer_value_type
from agents.models import Tool, ToolPermission

PROVIDERS = choices_of(AuthProvider)


def _org(rec: Rec, ctx: Context, required=True):
    org_legacy = rec.str("org_id", "org_default" if not required else None, null=not required)
    if org_legacy is None:
        org_legacy = "org_default"
    pk = ctx.ref(Organization, org_legacy)
    if pk is None:
        rec.fail("org_id", f"{org_legacy!r} refers to no organization")
    return pk


def _ref_org(ctx: Context, model, legacy_id: str, pk):
    """The organization (primary key) of the role or user ``legacy_id``: from the files being
    imported (``ctx.raw``), else from the database."""
    book = (ctx.raw.get({Role: "role_orgs", User: "user_orgs"}[model]) or {})
    if legacy_id in book:
        return ctx.ref(Organization, book[legacy_id])
    return model._base_manager.filter(pk=pk).values_list("org_id", flat=True).first()


def _own_org_role(ctx: Context, legacy_id: str, org_pk):
    """The role's primary key when the role belongs to ``org_pk``, else None: AgentForge lets an
    identity provider default to another organization's role (``role_user`` of org_default),
    a link the database refuses; the reference is kept as dangling and exported unchanged."""
    pk = ctx.ref(Role, legacy_id)
    if pk is None:
        return None
    return pk if _ref_org(ctx, Role, legacy_id, pk) == org_pk else None


def _own_org_refs(ctx: Context, model, resolved: list, org_pk, field: str, dangling: dict, warnings: list, where: str):
    """``resolved`` (from split_refs) without the rows of another organization: AgentForge lets
    a user hold, or a group grant, a role of another organization (``role_user`` of
    org_default), a link the database refuses. Those ids join the dangling ones, at their
    positions, and are exported unchanged."""
    kept = []
    for position, legacy_id, pk in resolved:
        if _ref_org(ctx, model, legacy_id, pk) in (org_pk, None):
            kept.append((position, legacy_id, pk))
            continue
        dangling.setdefault(field, []).append([position, legacy_id])
        warnings.append(f"{where}: {field}: {legacy_id!r} belongs to another organization (kept as a dangling reference)")
    if field in dangling:
        dangling[field].sort(key=lambda item: item[0])
    return kept


def _org_out(ctx: Context, instance) -> str:
    return ctx.legacy_id_of(Organization, instance.org_id)


def _times(rec: Rec, values: dict, *names):
    for name in names:
        value = rec.ts(name, None)
        if value is not None:
            values[name] = value


def _finish_row(rec: Rec, values: dict, model, mapped, dangling: dict):
    """The common end of a simple mapper: timestamps, leftovers and dangling ids, the row."""
    _times(rec, values, "created_at", "updated_at")
    values["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None})
    mapped.rows.append(Row(model, values))
    return mapped


def _hash_in(value, salts: set):
    """A legacy hash → Django form; an unusable one is kept verbatim (never matches)."""
    try:
        converted, two_part = passwords.to_django(value)
    except passwords.HashFormatError:
        return value, False
    if two_part:
        salts.add(passwords.salt_of(converted))
    return converted, True


def _hash_out(value, salts) -> str:
    return passwords.to_legacy(value, salts) or value


# --- organizations ---------------------------------------------------------------------------

class OrganizationMapper(Mapper):
    model = Organization
    DEFAULTS = {"directory_source": "internal", "hr_api_config": None, "max_users": 100, "max_agents": 50,
                "max_tools": 100, "status": "active", "require_mfa": False, "settings": {}, "allowed_auth_providers": [],
                "allowed_email_domains": []}

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        name = rec.str("name", max_length=255)
        v = {
            "id": self.pk(lid), "legacy_id": lid, "name": name,
            "slug": rec.str("slug", None, null=True, max_length=100),
            "domain": rec.str("domain", None, null=True, max_length=255),
            "logo_url": rec.str("logo_url", None, null=True),
            "settings": rec.dict("settings", {}),
            "allowed_auth_providers": rec.list("allowed_auth_providers", [], of=str),
            "require_mfa": rec.bool("require_mfa", False),
            "allowed_email_domains": rec.list("allowed_email_domains", [], of=str),
            "google_client_id": rec.str("google_client_id", None, null=True, max_length=255),
            "google_client_secret": rec.str("google_client_secret", None, null=True),
            "microsoft_client_id": rec.str("microsoft_client_id", None, null=True, max_length=255),
            "microsoft_client_secret": rec.str("microsoft_client_secret", None, null=True),
            "microsoft_tenant_id": rec.str("microsoft_tenant_id", None, null=True, max_length=255),
            "max_users": rec.int("max_users", 100), "max_agents": rec.int("max_agents", 50),
            "max_tools": rec.int("max_tools", 100),
            "status": rec.enum("status", Organization.Status.choices, "active"),
            "directory_source": rec.enum("directory_source", Organization.DirectorySource.choices, "internal"),
            "hr_api_config": rec.dict("hr_api_config", None, null=True),
        }
        for provider in v["allowed_auth_providers"]:
            if provider not in PROVIDERS:
                rec.fail("allowed_auth_providers", f"unknown value {provider!r} (expected one of {', '.join(PROVIDERS)})")
        if v["slug"] is None:
            v["slug"] = (slugify(name)[:100] or lid[:100])
        _times(rec, v, "created_at", "updated_at")
        dangling = {}
        ldap_id = rec.str("ldap_config_id", None, null=True)
        if ldap_id is not None and not ctx.exists(LDAPConfig, ldap_id):
            dangling["ldap_config_id"] = ldap_id
            mapped.warnings.append(f"{where}: ldap_config_id: {ldap_id!r} refers to no LDAP config")
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None})
        mapped.rows.append(Row(Organization, v))
        return mapped

    def export_queryset(self):
        # The organization's directory, read with all organizations at once (not one query each).
        directories = LDAPConfig.all_orgs.filter(is_org_directory=True).order_by(*(LDAPConfig._meta.ordering or ["pk"]))
        return super().export_queryset().prefetch_related(Prefetch("ldap_configs", directories, to_attr="org_directories"))

    def to_legacy(self, org, ctx=None):
        ctx = ctx or Context()
        extra = org.legacy_extra or {}
        if hasattr(org, "org_directories"):
            ldap = next(((cfg.legacy_id, cfg.pk) for cfg in org.org_directories), None)
        else:
            ldap = LDAPConfig.all_orgs.filter(org_id=org.pk, is_org_directory=True).values_list("legacy_id", "pk").first()
        ldap_id = (extra.get(DANGLING) or {}).get("ldap_config_id")
        if ldap is not None:
            ldap_id = ldap[0] or str(ldap[1])
        out = {
            "id": org.legacy_id or str(org.pk), "name": org.name, "slug": org.slug, "domain": org.domain,
            "logo_url": org.logo_url, "settings": org.settings, "allowed_auth_providers": org.allowed_auth_providers,
            "require_mfa": org.require_mfa, "allowed_email_domains": org.allowed_email_domains,
            "google_client_id": org.google_client_id, "google_client_secret": org.google_client_secret,
            "microsoft_client_id": org.microsoft_client_id, "microsoft_client_secret": org.microsoft_client_secret,
            "microsoft_tenant_id": org.microsoft_tenant_id, "ldap_config_id": ldap_id,
            "max_users": org.max_users, "max_agents": org.max_agents, "max_tools": org.max_tools,
            "status": org.status, "created_at": ts_out(org.created_at), "updated_at": ts_out(org.updated_at),
            "directory_source": org.directory_source, "hr_api_config": org.hr_api_config,
        }
        out.update(extra_items(extra))
        return omit_missing(out, extra, self.DEFAULTS)


def default_organization_record(now) -> dict:
    """``org_default`` as AgentForge's SecurityState creates it on first start (both eras: the
    fields of its first Organization model, with their defaults)."""
    stamp = ts_out(now)
    return {"id": "org_default", "name": "Default Organization", "slug": "default", "domain": None, "logo_url": None,
            "settings": {}, "allowed_auth_providers": ["local", "google", "microsoft"], "require_mfa": False,
            "allowed_email_domains": [], "google_client_id": None, "google_client_secret": None,
            "microsoft_client_id": None, "microsoft_client_secret": None, "microsoft_tenant_id": None,
            "ldap_config_id": None, "max_users": 100, "max_agents": 50, "max_tools": 100, "status": "active",
            "created_at": stamp, "updated_at": stamp}


# --- roles -------------------------------------------------------------------------------------

class RoleMapper(Mapper):
    model = Role
    satellites = (("role_permissions", RolePermission),)
    DEFAULTS = {"level": 100, "is_system": False, "permissions": [], "parent_id": None, "created_by": None,
                "description": None}

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        org_id = _org(rec, ctx)
        v = {
            "id": self.pk(lid), "legacy_id": lid, "org_id": org_id,
            "name": rec.str("name", max_length=255),
            "description": rec.str("description", None, null=True),
            "level": rec.int("level", 100),
            "is_system": rec.bool("is_system", False),
            "parent_id": ref_or_keep(ctx, Role, rec.str("parent_id", None, null=True), "parent_id", dangling, mapped.warnings, where),
            "created_by_id": ref_or_keep(ctx, User, rec.str("created_by", None, null=True), "created_by", dangling, mapped.warnings, where),
        }
        _times(rec, v, "created_at", "updated_at")
        perms = rec.list("permissions", [], of=str)
        codes = list(dict.fromkeys(perms))
        lists = {"permissions": perms} if codes != sorted(codes) or len(codes) != len(perms) else None
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, LISTS: lists})
        mapped.rows.append(Row(Role, v))
        mapped.children.append(ChildSet(
            RolePermission, "role_id", v["id"],
            [{"org_id": org_id, "role_id": v["id"], "permission_id": ctx.permission_id(code)} for code in codes],
            ("permission_id",),
        ))
        return mapped

    def export_queryset(self):
        grants = RolePermission.all_orgs.select_related("permission")
        return super().export_queryset().prefetch_related(Prefetch("role_permissions", grants, to_attr="grants"))

    def to_legacy(self, role, ctx=None):
        ctx = ctx or Context()
        extra = role.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        if hasattr(role, "grants"):  # prefetched with every role (export_queryset)
            codes = sorted(grant.permission.codename for grant in role.grants)
        else:
            codes = sorted(RolePermission.all_orgs.filter(role_id=role.pk).values_list("permission__codename", flat=True))
        original = (extra.get(LISTS) or {}).get("permissions")
        out = {
            "id": role.legacy_id or str(role.pk), "org_id": _org_out(ctx, role), "name": role.name,
            "description": role.description,
            "permissions": original_or_current(original, set(original or ()), codes),
            "parent_id": ctx.legacy_id_of(Role, role.parent_id) if role.parent_id else dangling.get("parent_id"),
            "level": role.level, "is_system": role.is_system,
            "created_at": ts_out(role.created_at), "updated_at": ts_out(role.updated_at),
            "created_by": ctx.legacy_id_of(User, role.created_by_id) if role.created_by_id else dangling.get("created_by"),
        }
        out.update(extra_items(extra))
        return omit_missing(out, extra, self.DEFAULTS)


def permission_codes(data) -> set[str]:
    """Distinct permission strings in a loaded roles.json / users.json (for the catalog)."""
    codes = set()
    if isinstance(data, dict):
        for record in data.values():
            if isinstance(record, dict):
                for key in ("permissions", "direct_permissions"):
                    values = record.get(key)
                    if isinstance(values, list):
                        codes.update(c for c in values if isinstance(c, str) and len(c) <= 150)
    return codes


# --- departments --------------------------------------------------------------------------------

class DepartmentMapper(Mapper):
    model = Department
    DEFAULTS = {"description": None, "parent_id": None, "manager_id": None}

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        v = {
            "id": self.pk(lid), "legacy_id": lid, "org_id": _org(rec, ctx),
            "name": rec.str("name", max_length=255),
            "description": rec.str("description", None, null=True),
            "parent_id": ref_or_keep(ctx, Department, rec.str("parent_id", None, null=True), "parent_id", dangling, mapped.warnings, where),
            "manager_id": ref_or_keep(ctx, User, rec.str("manager_id", None, null=True), "manager_id", dangling, mapped.warnings, where),
        }
        return _finish_row(rec, v, Department, mapped, dangling)

    def to_legacy(self, dept, ctx=None):
        ctx = ctx or Context()
        extra = dept.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        out = {
            "id": dept.legacy_id or str(dept.pk), "org_id": _org_out(ctx, dept), "name": dept.name,
            "description": dept.description,
            "parent_id": ctx.legacy_id_of(Department, dept.parent_id) if dept.parent_id else dangling.get("parent_id"),
            "manager_id": ctx.legacy_id_of(User, dept.manager_id) if dept.manager_id else dangling.get("manager_id"),
            "created_at": ts_out(dept.created_at), "updated_at": ts_out(dept.updated_at),
        }
        out.update(extra_items(extra))
        return omit_missing(out, extra, self.DEFAULTS)


# --- users ---------------------------------------------------------------------------------------

PROFILE_USER_FIELDS = {"first_name": 150, "last_name": 150, "display_name": 255, "avatar_url": None, "phone": 50,
                       "job_title": 255, "location": 255, "bio": None}
USER_DEFAULTS = {"has_admin_access": False, "has_enduser_access": True, "manager_id": None, "employee_id": None,
                 "direct_permissions": [], "group_ids": [], "role_ids": [], "password_history": [],
                 "failed_login_attempts": 0, "must_change_password": False, "created_by": None, "last_login_ip": None,
                 "external_id": None, "department_id": None, "verification_token": None,
                 "verification_token_expires": None, "reset_password_token": None, "reset_password_expires": None,
                 "locked_until": None, "password_changed_at": None, "last_login": None, "last_active": None,
                 "status": "active", "email_verified": False, "auth_provider": "local"}
MFA_DEFAULTS = {"enabled": False, "methods": [], "totp_secret": None, "totp_verified": False, "backup_codes": [],
                "backup_codes_generated_at": None, "phone_number": None, "phone_verified": False, "email_code": None,
                "email_code_expires": None, "sms_code": None, "sms_code_expires": None, "last_used": None,
                "recovery_email": None}
PROFILE_DEFAULTS = {"display_name": None, "avatar_url": None, "phone": None, "job_title": None, "location": None,
                    "bio": None, "timezone": "UTC", "language": "en", "custom_attributes": {}}
SALTS = "__two_part_salts__"
RAW_PASSWORD = "__password_hash__"
PROFILE = "__profile__"
MFA = "__mfa__"


class UserMapper(Mapper):
    model = User
    satellites = (("mfa_settings", MFASettings), ("user_preferences", "settings_app.UserPreference"), ("user_roles", UserRole),
                  ("password_history", PasswordHistory))

    def map_record(self, record, ctx):
        from settings_app.models import UserPreference

        rec, lid, mapped, where = self.begin(record)
        dangling, salts, bookkeeping = {}, set(), {}
        pk = self.pk(lid)
        org_id = _org(rec, ctx)
        email = rec.str("email", max_length=254)
        if not email.strip():
            rec.fail("email", "is empty")
        v = {"id": pk, "legacy_id": lid, "org_id": org_id, "email": email,
             "email_normalized": normalize_email_address(email)}
        raw_hash = rec.str("password_hash", None, null=True)
        if raw_hash is None or raw_hash == "":
            v["password"] = passwords.UNUSABLE
            if raw_hash == "":
                bookkeeping[RAW_PASSWORD] = ""
        else:
            converted, ok = _hash_in(raw_hash, salts)
            if ok:
                v["password"] = converted
            else:
                v["password"] = passwords.UNUSABLE
                bookkeeping[RAW_PASSWORD] = raw_hash
                mapped.warnings.append(f"{where}: password_hash: not in a known format; the account gets no usable password")
        v["auth_provider"] = rec.enum("auth_provider", AuthProvider.choices, "local")
        v["external_id"] = rec.str("external_id", None, null=True, max_length=255)

        # profile -> user columns + preferences
        profile = Rec(rec.dict("profile", {}), "profile.")
        for name, max_length in PROFILE_USER_FIELDS.items():
            if name in ("first_name", "last_name"):
                v[name] = profile.str(name, "", max_length=max_length) or ""
                if profile.data.get(name) is None and name in profile.data:
                    profile.fail(name, "expected a string, got null")
            else:
                v[name] = profile.str(name, None, null=True, max_length=max_length)
        prefs = {
            "org_id": org_id, "user_id": pk,
            "timezone": profile.str("timezone", "UTC", max_length=64),
            "language": profile.str("language", "en", max_length=16),
            "custom_attributes": profile.dict("custom_attributes", {}),
        }
        profile_book = profile.extra()
        if profile.missing:
            profile_book[MISSING_KEY] = profile.missing
        if "profile" not in record:
            profile_book["__absent__"] = True
        if profile_book:
            bookkeeping[PROFILE] = profile_book

        v["department_id"] = ref_or_keep(ctx, Department, rec.str("department_id", None, null=True), "department_id", dangling, mapped.warnings, where)
        v["manager_id"] = ref_or_keep(ctx, User, rec.str("manager_id", None, null=True), "manager_id", dangling, mapped.warnings, where)
        v["created_by_id"] = ref_or_keep(ctx, User, rec.str("created_by", None, null=True), "created_by", dangling, mapped.warnings, where)
        v["employee_id"] = rec.str("employee_id", None, null=True, max_length=100)
        v["direct_permissions"] = rec.list("direct_permissions", [], of=str)
        v["status"] = rec.enum("status", User.Status.choices, "active")
        v["email_verified"] = rec.bool("email_verified", False)

        now = ctx.now
        token = rec.str("verification_token", None, null=True)
        v["verification_token_expires"] = rec.ts("verification_token_expires", None, null=True)
        v["verification_token_hash"] = None
        if token:
            expired = v["verification_token_expires"] is not None and v["verification_token_expires"] <= now
            if v["email_verified"] or expired:
                mapped.notes.append("stale verification token not imported")
            else:
                v["verification_token_hash"] = sha256_hex(token)
        token = rec.str("reset_password_token", None, null=True)
        v["reset_password_expires"] = rec.ts("reset_password_expires", None, null=True)
        v["reset_password_token_hash"] = None
        if token:
            if v["reset_password_expires"] is None or v["reset_password_expires"] <= now:
                mapped.notes.append("expired password-reset token not imported")
            else:
                v["reset_password_token_hash"] = sha256_hex(token)

        v["failed_login_attempts"] = rec.int("failed_login_attempts", 0)
        v["locked_until"] = rec.ts("locked_until", None, null=True)
        v["password_changed_at"] = rec.ts("password_changed_at", None, null=True)
        v["must_change_password"] = rec.bool("must_change_password", False)
        v["last_login"] = rec.ts("last_login", None, null=True)
        v["last_active"] = rec.ts("last_active", None, null=True)
        ip, bad_ip = rec.ip("last_login_ip")
        v["last_login_ip"] = ip
        if bad_ip is not None:
            dangling["last_login_ip"] = bad_ip
        v["has_admin_access"] = rec.bool("has_admin_access", False)
        v["has_enduser_access"] = rec.bool("has_enduser_access", True)
        _times(rec, v, "created_at", "updated_at")

        # roles (ordered) and groups (membership rows come from the groups file)
        role_ids = rec.list("role_ids", [], of=str)
        resolved = split_refs(ctx, Role, role_ids, "role_ids", dangling, mapped.warnings, where)
        resolved = _own_org_refs(ctx, Role, resolved, org_id, "role_ids", dangling, mapped.warnings, where)
        group_ids = rec.list("group_ids", [], of=str)
        if group_ids or record.get("group_ids") == []:
            bookkeeping[LISTS] = {"group_ids": group_ids}
        for gid in group_ids:
            if not ctx.exists(Group, gid):
                mapped.warnings.append(f"{where}: group_ids: {gid!r} refers to no group")

        # password history (oldest first)
        history = rec.list("password_history", [], of=str)
        history_rows = []
        for position, entry in enumerate(history):
            converted, _ = _hash_in(entry, salts)
            history_rows.append({"org_id": org_id, "user_id": pk, "password_hash": converted, "position": position})

        # MFA
        mfa_rec = Rec(rec.dict("mfa", {}), "mfa.")
        mfa = {
            "id": legacy_uuid("mfa_settings", lid), "org_id": org_id, "user_id": pk,
            "enabled": mfa_rec.bool("enabled", False),
            "methods": mfa_rec.list("methods", [], of=str),
            "totp_secret": mfa_rec.str("totp_secret", None, null=True),
            "totp_verified": mfa_rec.bool("totp_verified", False),
            "backup_codes": [_hash_in(code, salts)[0] for code in mfa_rec.list("backup_codes", [], of=str)],
            "backup_codes_generated_at": mfa_rec.ts("backup_codes_generated_at", None, null=True),
            "phone_number": mfa_rec.str("phone_number", None, null=True, max_length=50),
            "phone_verified": mfa_rec.bool("phone_verified", False),
            "last_used": mfa_rec.ts("last_used", None, null=True),
            "recovery_email": mfa_rec.str("recovery_email", None, null=True, max_length=254),
        }
        for kind in ("email", "sms"):
            code = mfa_rec.str(f"{kind}_code", None, null=True)
            expires = mfa_rec.ts(f"{kind}_code_expires", None, null=True)
            mfa[f"{kind}_code_expires"] = expires
            mfa[f"{kind}_code_hash"] = None
            if code:
                if expires is not None and expires > now:
                    mfa[f"{kind}_code_hash"] = sha256_hex(code)
                else:
                    mapped.notes.append(f"stale {kind} one-time code not imported")
        if mfa["totp_secret"] and not mfa["enabled"]:
            mapped.notes.append("TOTP secret of a user with MFA off kept encrypted, MFA stays off")
        mfa_book = mfa_rec.extra()
        if mfa_rec.missing:
            mfa_book[MISSING_KEY] = mfa_rec.missing
        if "mfa" not in record:
            mfa_book["__absent__"] = True
        if mfa_book:
            bookkeeping[MFA] = mfa_book
        if salts:
            bookkeeping[SALTS] = sorted(salts)

        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None}, **bookkeeping)
        mapped.rows.append(Row(User, v))
        mapped.rows.append(Row(MFASettings, mfa))
        mapped.rows.append(Row(UserPreference, prefs, key_fields=("user_id",)))
        mapped.children.append(ChildSet(
            UserRole, "user_id", pk,
            [{"org_id": org_id, "user_id": pk, "role_id": rpk, "position": pos} for pos, _, rpk in resolved],
            ("role_id", "position"),
        ))
        mapped.children.append(ChildSet(PasswordHistory, "user_id", pk, history_rows, ("password_hash", "position")))
        return mapped

    def export_queryset(self):
        # Everything to_legacy reads of a user, for all users in a fixed number of queries.
        return (
            super().export_queryset()
            .select_related("preferences", "mfa")
            .prefetch_related(
                Prefetch("user_roles", UserRole.all_orgs.order_by("position"), to_attr="role_links"),
                Prefetch(
                    "group_memberships",
                    GroupMembership.all_orgs.select_related("group").order_by("group__created_at", "group__legacy_id"),
                    to_attr="group_links",
                ),
                Prefetch("password_history", PasswordHistory.all_orgs.order_by("position"), to_attr="history_rows"),
            )
        )

    @staticmethod
    def _related(user):
        """(preferences, MFA row, role ids, groups, password hashes): prefetched or queried."""
        from settings_app.models import UserPreference

        if hasattr(user, "role_links"):
            prefs = getattr(user, "preferences", None) if hasattr(user, "preferences") else None
            mfa = user.mfa if hasattr(user, "mfa") else None
            return (prefs, mfa, [link.role_id for link in user.role_links], [link.group for link in user.group_links],
                    [entry.password_hash for entry in user.history_rows])
        groups = list(Group.all_orgs.filter(memberships__user_id=user.pk).order_by("created_at", "legacy_id"))
        return (
            UserPreference.all_orgs.filter(user_id=user.pk).first(),
            MFASettings.all_orgs.filter(user_id=user.pk).first(),
            list(UserRole.all_orgs.filter(user_id=user.pk).order_by("position").values_list("role_id", flat=True)),
            groups,
            list(PasswordHistory.all_orgs.filter(user_id=user.pk).order_by("position").values_list("password_hash", flat=True)),
        )

    def to_legacy(self, user, ctx=None):
        ctx = ctx or Context()
        extra = user.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        salts = set(extra.get(SALTS) or ())
        if user.password and user.password.startswith("!"):
            password_hash = extra.get(RAW_PASSWORD)
        else:
            password_hash = _hash_out(user.password, salts)
        prefs, mfa_row, roles, groups, hashes = self._related(user)
        profile = {"first_name": user.first_name, "last_name": user.last_name, "display_name": user.display_name,
                   "avatar_url": user.avatar_url, "phone": user.phone,
                   "timezone": prefs.timezone if prefs else "UTC", "language": prefs.language if prefs else "en",
                   "job_title": user.job_title, "location": user.location, "bio": user.bio,
                   "custom_attributes": prefs.custom_attributes if prefs else {}}
        profile_book = extra.get(PROFILE) or {}
        profile.update(extra_items(profile_book))
        omit_missing(profile, profile_book, PROFILE_DEFAULTS)

        mfa_book = extra.get(MFA) or {}
        mfa = {}
        if mfa_row is not None:
            mfa = {"enabled": mfa_row.enabled, "methods": mfa_row.methods, "totp_secret": mfa_row.totp_secret,
                   "totp_verified": mfa_row.totp_verified,
                   "backup_codes": [_hash_out(code, salts) for code in mfa_row.backup_codes],
                   "backup_codes_generated_at": ts_out(mfa_row.backup_codes_generated_at),
                   "phone_number": mfa_row.phone_number, "phone_verified": mfa_row.phone_verified,
                   "email_code": None, "email_code_expires": ts_out(mfa_row.email_code_expires),
                   "sms_code": None, "sms_code_expires": ts_out(mfa_row.sms_code_expires),
                   "last_used": ts_out(mfa_row.last_used), "recovery_email": mfa_row.recovery_email}
            mfa.update(extra_items(mfa_book))
            omit_missing(mfa, mfa_book, MFA_DEFAULTS)

        role_ids = rebuild_list([ctx.legacy_id_of(Role, r) for r in roles], dangling.get("role_ids"))
        member_of = [ctx.legacy_id_of(Group, group.pk) for group in groups]
        original_groups = (extra.get(LISTS) or {}).get("group_ids")
        # Membership is the union of both sides: groups naming this user explain the rest.
        explained = {g for g in (original_groups or ()) if ctx.ref(Group, g) is not None}
        uid = user.legacy_id or str(user.pk)
        for gid, book in ((group.legacy_id, group.legacy_extra) for group in groups):
            lists = (book or {}).get(LISTS) or {}
            if uid in (lists.get("user_ids") or ()) or uid in (lists.get("member_ids") or ()):
                explained.add(gid)
        if original_groups is not None and explained == set(member_of):
            group_ids = list(original_groups)
        else:
            group_ids = member_of
        history = [_hash_out(h, salts) for h in hashes]

        out = {
            "id": user.legacy_id or str(user.pk), "org_id": _org_out(ctx, user), "email": user.email,
            "password_hash": password_hash, "auth_provider": user.auth_provider, "external_id": user.external_id,
            "profile": profile, "mfa": mfa,
            "department_id": ctx.legacy_id_of(Department, user.department_id) if user.department_id else dangling.get("department_id"),
            "group_ids": group_ids, "role_ids": role_ids, "direct_permissions": user.direct_permissions,
            "status": user.status, "email_verified": user.email_verified,
            "verification_token": None, "verification_token_expires": ts_out(user.verification_token_expires),
            "reset_password_token": None, "reset_password_expires": ts_out(user.reset_password_expires),
            "password_history": history, "failed_login_attempts": user.failed_login_attempts,
            "locked_until": ts_out(user.locked_until), "password_changed_at": ts_out(user.password_changed_at),
            "must_change_password": user.must_change_password, "last_login": ts_out(user.last_login),
            "last_active": ts_out(user.last_active), "last_login_ip": user.last_login_ip or dangling.get("last_login_ip"),
            "created_at": ts_out(user.created_at), "updated_at": ts_out(user.updated_at),
            "created_by": ctx.legacy_id_of(User, user.created_by_id) if user.created_by_id else dangling.get("created_by"),
            "has_admin_access": user.has_admin_access, "has_enduser_access": user.has_enduser_access,
            "manager_id": ctx.legacy_id_of(User, user.manager_id) if user.manager_id else dangling.get("manager_id"),
            "employee_id": user.employee_id,
        }
        if profile_book.get("__absent__"):
            del out["profile"]
        if mfa_book.get("__absent__") or mfa_row is None:
            del out["mfa"]
        out.update(extra_items(extra))
        return omit_missing(out, extra, USER_DEFAULTS)


# --- groups ----------------------------------------------------------------------------------------

class GroupMapper(Mapper):
    model = Group
    satellites = (("group_members", GroupMembership), ("group_roles", GroupRole))
    DEFAULTS = {"description": None, "user_ids": [], "role_ids": [], "member_ids": []}

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        org_id = _org(rec, ctx)
        pk = self.pk(lid)
        v = {"id": pk, "legacy_id": lid, "org_id": org_id, "name": rec.str("name", max_length=255),
             "description": rec.str("description", None, null=True)}
        _times(rec, v, "created_at", "updated_at")
        user_ids = rec.list("user_ids", [], of=str)
        member_ids = rec.list("member_ids", [], of=str)
        role_ids = rec.list("role_ids", [], of=str)
        claimed = (ctx.raw.get("user_groups") or {}).get(lid, [])
        members = []
        for uid in dict.fromkeys([*user_ids, *member_ids, *claimed]):
            upk = ctx.ref(User, uid)
            if upk is None:
                mapped.warnings.append(f"{where}: user_ids: {uid!r} refers to no user")
            elif _ref_org(ctx, User, uid, upk) not in (org_id, None):  # kept in the lists only
                mapped.warnings.append(f"{where}: user_ids: {uid!r} belongs to another organization (not a member)")
            else:
                members.append(upk)
        roles = split_refs(ctx, Role, role_ids, "role_ids", dangling, mapped.warnings, where)
        roles = _own_org_refs(ctx, Role, roles, org_id, "role_ids", dangling, mapped.warnings, where)
        lists = {"user_ids": user_ids, "member_ids": member_ids, "role_ids": role_ids}
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, LISTS: lists})
        mapped.rows.append(Row(Group, v))
        mapped.children.append(ChildSet(GroupMembership, "group_id", pk,
                                        [{"org_id": org_id, "group_id": pk, "user_id": u} for u in members], ("user_id",)))
        mapped.children.append(ChildSet(GroupRole, "group_id", pk,
                                        [{"org_id": org_id, "group_id": pk, "role_id": r} for _, _, r in roles], ("role_id",)))
        return mapped

    def export_queryset(self):
        # Members (with their rows) and roles of every group in a fixed number of queries.
        return super().export_queryset().prefetch_related(
            Prefetch("memberships", GroupMembership.all_orgs.select_related("user").order_by("user__email"), to_attr="member_links"),
            Prefetch("group_roles", GroupRole.all_orgs.order_by("pk"), to_attr="role_links"),
        )

    def to_legacy(self, group, ctx=None):
        ctx = ctx or Context()
        extra = group.legacy_extra or {}
        lists = extra.get(LISTS) or {}
        if hasattr(group, "member_links"):
            member_users = [link.user for link in group.member_links]
            role_pks = [link.role_id for link in group.role_links]
        else:
            member_users = [link.user for link in GroupMembership.all_orgs.filter(group_id=group.pk).select_related("user").order_by("user__email")]
            role_pks = list(GroupRole.all_orgs.filter(group_id=group.pk).order_by("pk").values_list("role_id", flat=True))
        members = [ctx.legacy_id_of(User, u.pk) for u in member_users]
        roles = [ctx.legacy_id_of(Role, r) for r in role_pks]
        user_ids, member_ids = lists.get("user_ids"), lists.get("member_ids")
        # Members recorded on either side (users' group_ids count too, see the users mapper).
        known = set(user_ids or ()) | set(member_ids or ())
        claimed = set()
        for uid, book in ((user.legacy_id, user.legacy_extra) for user in member_users):
            if group.legacy_id in ((book or {}).get(LISTS) or {}).get("group_ids", ()):
                claimed.add(uid)
        resolvable = {u for u in known if ctx.ref(User, u) is not None} | claimed
        if user_ids is not None and resolvable == set(members):
            out_users, out_members = list(user_ids), list(member_ids or [])
        else:
            out_users, out_members = members, (members if member_ids else [])
        role_original = lists.get("role_ids")
        out = {
            "id": group.legacy_id or str(group.pk), "org_id": _org_out(ctx, group), "name": group.name,
            "description": group.description, "user_ids": out_users,
            "role_ids": original_or_current(role_original, {r for r in role_original or () if ctx.ref(Role, r)}, roles),
            "created_at": ts_out(group.created_at), "updated_at": ts_out(group.updated_at),
            "member_ids": out_members,
        }
        out.update(extra_items(extra))
        return omit_missing(out, extra, self.DEFAULTS)


# --- identity providers --------------------------------------------------------------------------

class OAuthConfigMapper(Mapper):
    model = OAuthConfig
    DEFAULTS = {"tenant_id": None, "scopes": [], "enabled": True, "auto_create_users": True,
                "update_profile_on_login": True, "default_role_id": "role_user", "allowed_domains": [],
                "client_secret": None}

    def map_record(self, record, ctx):
        rec, lid, mapped, _ = self.begin(record)
        dangling = {}
        v = {
            "id": self.pk(lid), "legacy_id": lid, "org_id": _org(rec, ctx),
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
        v["default_role_id"] = _own_org_role(ctx, role, v["org_id"]) if role else None
        if role is not None and v["default_role_id"] is None:
            dangling["default_role_id"] = role
        return _finish_row(rec, v, OAuthConfig, mapped, dangling)

    def to_legacy(self, cfg, ctx=None):
        ctx = ctx or Context()
        extra = cfg.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        out = {
            "id": cfg.legacy_id or str(cfg.pk), "org_id": _org_out(ctx, cfg), "provider": cfg.provider,
            "client_id": cfg.client_id, "client_secret": cfg.client_secret, "tenant_id": cfg.tenant_id,
            "scopes": cfg.scopes, "enabled": cfg.enabled, "auto_create_users": cfg.auto_create_users,
            "update_profile_on_login": cfg.update_profile_on_login,
            "default_role_id": ctx.legacy_id_of(Role, cfg.default_role_id) if cfg.default_role_id else dangling.get("default_role_id"),
            "allowed_domains": cfg.allowed_domains,
            "created_at": ts_out(cfg.created_at), "updated_at": ts_out(cfg.updated_at),
        }
        out.update(extra_items(extra))
        return omit_missing(out, extra, self.DEFAULTS)


LDAP_FIELDS = [
    # (legacy key, attname, kind, default)
    ("name", "name", "str", "LDAP"), ("server_url", "server_url", "str", ""), ("use_ssl", "use_ssl", "bool", False),
    ("use_tls", "use_tls", "bool", False), ("verify_ssl", "verify_ssl", "bool", True),
    ("connection_timeout", "connection_timeout", "int", 10), ("bind_dn", "bind_dn", "str", ""),
    ("bind_password", "bind_password", "ostr", None), ("base_dn", "base_dn", "str", ""),
    ("user_search_filter", "user_search_filter", "str", "(uid={username})"),
    ("user_search_base", "user_search_base", "ostr", None), ("user_object_class", "user_object_class", "str", ""),
    ("group_search_filter", "group_search_filter", "ostr", None), ("group_search_base", "group_search_base", "ostr", None),
    ("group_object_class", "group_object_class", "str", ""), ("attribute_mapping", "attribute_mapping", "dict", {}),
    ("group_role_mapping", "group_role_mapping", "dict", {}), ("sync_enabled", "sync_enabled", "bool", False),
    ("sync_interval_hours", "sync_interval_hours", "int", 24), ("sync_delete_removed", "sync_delete_removed", "bool", False),
    ("sync_update_existing", "sync_update_existing", "bool", True), ("last_sync", "last_sync", "ts", None),
    ("last_sync_status", "last_sync_status", "ostr", None), ("last_sync_users_synced", "last_sync_users_synced", "int", 0),
    ("is_active", "is_active", "bool", True), ("last_connection_test", "last_connection_test", "ts", None),
    ("last_error", "last_error", "ostr", None),
]


class LDAPConfigMapper(Mapper):
    model = LDAPConfig

    def map_record(self, record, ctx):
        rec, lid, mapped, _ = self.begin(record)
        dangling = {}
        v = {"id": self.pk(lid), "legacy_id": lid, "org_id": _org(rec, ctx)}
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
        v["default_role_id"] = _own_org_role(ctx, role, v["org_id"]) if role else None
        if role is not None and v["default_role_id"] is None:
            dangling["default_role_id"] = role
        org_ldap = ctx.raw.get("org_ldap")
        if org_ldap is not None:
            v["is_org_directory"] = lid in org_ldap
        return _finish_row(rec, v, LDAPConfig, mapped, dangling)

    def to_legacy(self, cfg, ctx=None):
        ctx = ctx or Context()
        extra = cfg.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        out = {"id": cfg.legacy_id or str(cfg.pk), "org_id": _org_out(ctx, cfg)}
        defaults = {}
        for key, attname, kind, default in LDAP_FIELDS:
            value = getattr(cfg, attname)
            out[key] = ts_out(value) if kind == "ts" else value
            defaults[key] = default
        out["connection_status"] = cfg.connection_status
        out["default_role_id"] = ctx.legacy_id_of(Role, cfg.default_role_id) if cfg.default_role_id else dangling.get("default_role_id")
        out["created_at"], out["updated_at"] = ts_out(cfg.created_at), ts_out(cfg.updated_at)
        defaults.update(connection_status="unknown", default_role_id="role_user")
        out.update(extra_items(extra))
        return omit_missing(out, extra, defaults)


# --- tool permissions ------------------------------------------------------------------------------

class ToolPermissionMapper(Mapper):
    model = ToolPermission
    DEFAULTS = {"can_view": True, "can_execute": True, "can_edit": False, "can_delete": False, "allowed_actions": [],
                "denied_actions": [], "rate_limit_per_hour": None, "rate_limit_per_day": None,
                "allowed_hours_start": None, "allowed_hours_end": None, "allowed_days": [0, 1, 2, 3, 4, 5, 6],
                "allowed_ips": [], "denied_ips": [], "data_scope": None, "created_by": None, "role_ids": [],
                "user_ids": [], "group_ids": [], "tool_name": None}

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        v = {
            "id": self.pk(lid), "legacy_id": lid, "org_id": _org(rec, ctx),
            "tool_id": ref_or_keep(ctx, Tool, rec.str("tool_id", None, null=True), "tool_id", dangling, mapped.warnings, where),
            "tool_name": rec.str("tool_name", None, null=True, max_length=255),
            "role_ids": rec.list("role_ids", [], of=str), "user_ids": rec.list("user_ids", [], of=str),
            "group_ids": rec.list("group_ids", [], of=str),
            "can_view": rec.bool("can_view", True), "can_execute": rec.bool("can_execute", True),
            "can_edit": rec.bool("can_edit", False), "can_delete": rec.bool("can_delete", False),
            "allowed_actions": rec.list("allowed_actions", []), "denied_actions": rec.list("denied_actions", []),
            "rate_limit_per_hour": rec.int("rate_limit_per_hour", None, null=True),
            "rate_limit_per_day": rec.int("rate_limit_per_day", None, null=True),
            "allowed_hours_start": rec.int("allowed_hours_start", None, null=True, minimum=0, maximum=23),
            "allowed_hours_end": rec.int("allowed_hours_end", None, null=True, minimum=0, maximum=23),
            "allowed_days": rec.list("allowed_days", [0, 1, 2, 3, 4, 5, 6]),
            "allowed_ips": rec.list("allowed_ips", []), "denied_ips": rec.list("denied_ips", []),
            "data_scope": rec.dict("data_scope", None, null=True),
            "created_by_id": ref_or_keep(ctx, User, rec.str("created_by", None, null=True), "created_by", dangling, mapped.warnings, where),
        }
        return _finish_row(rec, v, ToolPermission, mapped, dangling)

    def to_legacy(self, perm, ctx=None):
        ctx = ctx or Context()
        extra = perm.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        out = {"id": perm.legacy_id or str(perm.pk), "org_id": _org_out(ctx, perm),
               "tool_id": ctx.legacy_id_of(Tool, perm.tool_id) if perm.tool_id else dangling.get("tool_id")}
        for name in ("tool_name", "role_ids", "user_ids", "group_ids", "can_view", "can_execute", "can_edit", "can_delete",
                     "allowed_actions", "denied_actions", "rate_limit_per_hour", "rate_limit_per_day",
                     "allowed_hours_start", "allowed_hours_end", "allowed_days", "allowed_ips", "denied_ips", "data_scope"):
            out[name] = getattr(perm, name)
        out["created_at"], out["updated_at"] = ts_out(perm.created_at), ts_out(perm.updated_at)
        out["created_by"] = ctx.legacy_id_of(User, perm.created_by_id) if perm.created_by_id else dangling.get("created_by")
        out.update(extra_items(extra))
        return omit_missing(out, extra, self.DEFAULTS)


# --- security/settings.json ------------------------------------------------------------------------

SECURITY_PREFIX = "security."
SECURITY_SETTINGS_ID = "security_settings"


class SecuritySettingsMapper(Mapper):
    """``{"tenancy_mode": ..., "settings": {org_id: SecuritySettings}}`` → org settings rows
    ``security.<field>`` and the system setting ``security.tenancy_mode``."""

    model = OrgSetting
    satellites = (("system_settings", SystemSetting),)

    def record_id(self, outer_key, record):
        return outer_key

    def map_record(self, record, ctx):
        rec = Rec(record)
        mapped = Mapped("settings")
        tenancy = rec.enum("tenancy_mode", [("single", ""), ("multi", "")], None, null=True)
        if rec.has("tenancy_mode"):
            mapped.rows.append(_system_row(SECURITY_PREFIX + "tenancy_mode", tenancy))
        per_org = rec.dict("settings", {})
        for key, value in rec.extra().items():
            mapped.rows.append(_system_row(SECURITY_PREFIX + key, value))
        for outer, settings in per_org.items():
            if not isinstance(settings, dict):
                rec.fail(f"settings.{outer}", "expected an object")
            org_legacy = settings.get("org_id", outer)
            if not isinstance(org_legacy, str):
                rec.fail(f"settings.{outer}.org_id", "expected a string")
            if org_legacy != outer:
                mapped.warnings.append(f"{self.file}: settings {outer!r}: org_id {org_legacy!r} differs from the key; using org_id")
            org_id = ctx.ref(Organization, org_legacy)
            if org_id is None:
                rec.fail(f"settings.{outer}.org_id", f"{org_legacy!r} refers to no organization")
            for key, value in settings.items():
                if key == "org_id" or (key == "id" and value == SECURITY_SETTINGS_ID):
                    continue
                row = OrgSetting(org_id=org_id, key=SECURITY_PREFIX + key)
                row.set_value(value, secret=False)
                mapped.rows.append(Row(OrgSetting, {"org_id": org_id, "key": row.key, "value_type": row.value_type,
                                                    "value": value, "is_secret": False, "secret_value": None},
                                       key_fields=("org_id", "key")))
            if "id" not in settings:
                mapped.rows.append(Row(OrgSetting, {"org_id": org_id, "key": SECURITY_PREFIX + "__no_id__",
                                                    "value_type": "boolean", "value": True, "is_secret": False,
                                                    "secret_value": None}, key_fields=("org_id", "key")))
        return mapped

    def export(self, ctx) -> dict:
        out = {}
        for key, value in SystemSetting.objects.filter(key__startswith=SECURITY_PREFIX).order_by("id").values_list("key", "value"):
            out[key[len(SECURITY_PREFIX):]] = value
        settings = {}
        rows = OrgSetting.all_orgs.filter(key__startswith=SECURITY_PREFIX).order_by("org_id", "id").values_list("org_id", "key", "value")
        for org_id, key, value in rows:
            org_legacy = ctx.legacy_id_of(Organization, org_id)
            entry = settings.setdefault(org_legacy, {"id": SECURITY_SETTINGS_ID, "org_id": org_legacy})
            entry[key[len(SECURITY_PREFIX):]] = value
        for entry in settings.values():
            if entry.pop("__no_id__", None):
                entry.pop("id", None)
        result = {"tenancy_mode": out.pop("tenancy_mode")} if "tenancy_mode" in out else {}
        result["settings"] = settings
        result.update(out)
        return result


def _system_row(key, value, secret=False) -> Row:
    if secret:
        return Row(SystemSetting, {"key": key, "value_type": "secret", "value": None, "is_secret": True,
                                   "secret_value": "" if value is None else str(value)}, key_fields=("key",))
    return Row(SystemSetting, {"key": key, "value_type": infer_value_type(value), "value": value, "is_secret": False,
                               "secret_value": None}, key_fields=("key",))


# --- audit logs -------------------------------------------------------------------------------------

AUDIT_ACTIONS = {"login", "logout", "login_failed", "password_change", "password_reset", "mfa_enabled", "mfa_disabled",
                 "create", "read", "update", "delete", "execute", "export", "import", "share", "publish", "invite",
                 "settings_change"}
AUDITLOG_ACTION = {"create": 0, "update": 1, "delete": 2}
AUDIT_DEFAULTS = {"session_id": None, "resource_id": None, "resource_name": None, "details": {}, "changes": None,
                  "ip_address": None, "user_agent": None, "request_id": None, "request_path": None,
                  "request_method": None, "success": True, "error_message": None, "user_email": "", "user_name": "",
                  "org_id": None}
AUDIT_KEYS = frozenset(AUDIT_DEFAULTS) | {"id", "user_id", "action", "resource_type", "timestamp"}
# AgentForge's ResourceType; an entry written here about another table is exported under its parent.
AGENTFORGE_RESOURCE_TYPES = {"user", "role", "policy", "agent", "tool", "knowledge_base", "database", "document",
                             "conversation", "settings", "organization", "department", "group", "invitation", "session"}
RESOURCE_PARENTS = {"passwordhistory": "user", "mfasettings": "user", "userrole": "user", "userpreference": "user",
                    "groupmembership": "group", "grouprole": "group", "rolepermission": "role", "permission": "role",
                    "toolpermission": "tool", "agenttool": "agent", "agentversion": "agent", "documentchunk": "document",
                    "message": "conversation", "attachment": "conversation"}


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
    pipeline = True  # big and plain: read and mapped in a second process (legacy.pipeline)

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
            "legacy_id": lid, "org_id": org_id, "content_type_id": None,
            "object_pk": resource_id or "", "object_id": None, "object_repr": resource_name or "",
            "serialized_data": None, "action": AUDITLOG_ACTION.get(action, 3), "changes_text": "",
            "changes": rec.json("changes", None), "actor_id": ctx.ref(User, user_legacy),
            "cid": None, "remote_addr": ip, "remote_port": None,
            "timestamp": rec.ts("timestamp"),
            "additional_data": rec.json("details", {}),
            "actor_email": rec.str("user_email", "", null=True, max_length=254),
            "legacy_user_id": user_legacy, "legacy_action": action,
            "resource_type": rec.str("resource_type", "", max_length=40),
            "resource_id": resource_id, "resource_name": resource_name,
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
        if user_legacy is not None and v["actor_id"] is None:
            mapped.warnings.append(f"{where}: user_id: {user_legacy!r} refers to no user")
        extra = legacy_extra(rec, **{DANGLING: dangling or None})
        v["serialized_data"] = {"legacy_extra": extra} if extra else None
        mapped.rows.append(Row(AuditLog, v, key_fields=("legacy_id",)))
        return mapped

    def _map_plain(self, record, ctx):
        """The hot path: an entry with exactly the usual keys, well-typed, resolving references,
        canonical IPv4 or none, nothing to warn about. Returns the same Mapped as the generic
        code below, or None for anything else (the generic code then validates and reports)."""
        if record.keys() != AUDIT_KEYS:
            return None
        g = record.get
        lid = g("id")
        if type(lid) is not str or not lid or len(lid) > 128:
            return None
        org_legacy, user_legacy, action = g("org_id"), g("user_id"), g("action")
        resource_id, resource_name, ip = g("resource_id"), g("resource_name"), g("ip_address")
        user_email, user_name, stamp, success = g("user_email"), g("user_name"), g("timestamp"), g("success")
        if (type(action) is not str or action not in AUDIT_ACTIONS or type(g("resource_type")) is not str or len(g("resource_type")) > 40
                or type(user_name) is not str or len(user_name) > 255 or type(success) is not bool
                or type(stamp) is not str):
            return None
        # optional strings: (value, max length or 0)
        for value, limit in ((user_legacy, 128), (resource_id, 255), (resource_name, 0), (user_email, 254),
                             (g("user_agent"), 0), (g("session_id"), 128), (g("request_id"), 128),
                             (g("request_path"), 0), (g("request_method"), 10), (g("error_message"), 0)):
            if value is not None and (type(value) is not str or (limit and len(value) > limit)):
                return None
        if ip is not None and (type(ip) is not str or not _IPV4.fullmatch(ip)):
            return None
        if org_legacy is None:
            org_id = None
        elif type(org_legacy) is not str or not org_legacy or (org_id := ctx.ref(Organization, org_legacy)) is None:
            return None
        actor_id = ctx.ref(User, user_legacy)
        if user_legacy is not None and actor_id is None:
            return None
        try:
            timestamp = parse_timestamp(stamp)
        except ValueError:
            return None
        # same keys in the same order as the generic path (warnings list fields in this order)
        v = {
            "legacy_id": lid, "org_id": org_id, "content_type_id": None,
            "object_pk": resource_id or "", "object_id": None, "object_repr": resource_name or "",
            "serialized_data": None, "action": AUDITLOG_ACTION.get(action, 3), "changes_text": "",
            "changes": record["changes"], "actor_id": actor_id,
            "cid": None, "remote_addr": ip, "remote_port": None,
            "timestamp": timestamp,
            "additional_data": record["details"],
            "actor_email": user_email,
            "legacy_user_id": user_legacy, "legacy_action": action,
            "resource_type": record["resource_type"],
            "resource_id": resource_id, "resource_name": resource_name,
            "user_name": user_name,
            "user_agent": record["user_agent"],
            "session_id": record["session_id"],
            "request_id": record["request_id"],
            "request_path": record["request_path"],
            "request_method": record["request_method"],
            "success": success,
            "error_message": record["error_message"],
        }
        return Mapped(lid, rows=[Row(AuditLog, v, key_fields=("legacy_id",))])

    def to_legacy(self, entry, ctx=None):
        ctx = ctx or Context()
        extra = (entry.serialized_data or {}).get("legacy_extra") or {}
        dangling = extra.get(DANGLING) or {}
        out = {
            "id": entry.legacy_id or str(entry.pk),
            "org_id": ctx.legacy_id_of(Organization, entry.org_id) if entry.org_id else dangling.get("org_id"),
            "user_id": entry.legacy_user_id if entry.legacy_user_id is not None else
            (ctx.legacy_id_of(User, entry.actor_id) if entry.actor_id else None),
            "user_email": entry.actor_email,
            "user_name": None if "user_name" in dangling else entry.user_name,
            "session_id": entry.session_id, "action": entry.legacy_action or {0: "create", 1: "update", 2: "delete"}.get(entry.action, "read"),
            "resource_type": entry.resource_type, "resource_id": entry.resource_id, "resource_name": entry.resource_name,
            "details": entry.additional_data, "changes": entry.changes,
            "ip_address": entry.remote_addr or dangling.get("ip_address"), "user_agent": entry.user_agent,
            "request_id": entry.request_id, "request_path": entry.request_path, "request_method": entry.request_method,
            "success": entry.success, "error_message": entry.error_message, "timestamp": ts_out(entry.timestamp),
        }
        if entry.legacy_id is None:
            _agentforge_shaped(out)
        out.update(extra_items(extra))
        return omit_missing(out, extra, AUDIT_DEFAULTS)

    def export_queryset(self):
        from django.db.models import Q

        return AuditLog.all_orgs.filter(Q(legacy_id__isnull=False) | ~Q(legacy_action="")).order_by("timestamp", "id")
