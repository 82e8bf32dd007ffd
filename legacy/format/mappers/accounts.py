"""Mappers for the ``accounts`` tables: organizations, roles, departments, users, groups
(``security/*.json``, docs/legacy-format.md §3)."""

from __future__ import annotations

from django.db.models import Prefetch
from django.utils.text import slugify

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
from agentforge_core.crypto import sha256_hex
from agentforge_core.models import legacy_uuid
from legacy.format import passwords
from legacy.format.errors import LegacyFieldError
from legacy.format.mappers.base import (
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
from legacy.format.mappers.common import (
    DANGLING,
    LISTS,
    field_ref,
    finish_row,
    org_legacy_id,
    original_or_current,
    own_org_refs,
    rebuild_list,
    referenced_org,
    security_file_org,
    set_timestamps,
    split_refs,
)
from security.models import LDAPConfig
from settings_app.models import UserPreference

PROVIDERS = choices_of(AuthProvider)


# --- organizations ---------------------------------------------------------------------------


SLUG = "__slug__"  # legacy_extra: [slug as written, slug stored] when the written one was taken


def free_slug(ctx: Context, slug: str, lid: str) -> tuple[str, str | None]:
    """``slug``, or ``slug-2``, ``slug-3``, ... when another organization has it (in this run or
    in the database; compared without case, as MariaDB's collation does), and who had it.

    AgentForge never checked slugs: with its database up, the late era writes both its in-memory
    ``org_default`` and the database's default organization (a UUID), each with the slug ``default``
    (docs/legacy-format.md §3.1). The column is unique here; the export writes the slug back as
    it was written."""
    owner = None
    for n in range(1, 10_000):
        suffix = "" if n == 1 else f"-{n}"
        candidate = slug[: 100 - len(suffix)] + suffix
        key = candidate.casefold()
        holder = ctx.org_slugs.get(key)
        if holder is None or holder == lid:
            row = (
                Organization._base_manager.filter(slug__iexact=candidate)
                .exclude(legacy_id=lid)
                .values_list("legacy_id", "pk")
                .first()
            )
            holder = None if row is None else (row[0] or str(row[1]))
        if holder is None or holder == lid:
            ctx.org_slugs[key] = lid
            return candidate, owner
        owner = owner or holder
    raise LegacyFieldError("slug", f"{slug!r} and its numbered variants are all taken")


class OrganizationMapper(Mapper):
    model = Organization
    DEFAULTS = {
        "directory_source": "internal",
        "hr_api_config": None,
        "max_users": 100,
        "max_agents": 50,
        "max_tools": 100,
        "status": "active",
        "require_mfa": False,
        "settings": {},
        "allowed_auth_providers": [],
        "allowed_email_domains": [],
    }

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        name = rec.str("name", max_length=255)
        v = {
            "id": self.pk(lid),
            "legacy_id": lid,
            "name": name,
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
            "max_users": rec.int("max_users", 100),
            "max_agents": rec.int("max_agents", 50),
            "max_tools": rec.int("max_tools", 100),
            "status": rec.enum("status", Organization.Status.choices, "active"),
            "directory_source": rec.enum("directory_source", Organization.DirectorySource.choices, "internal"),
            "hr_api_config": rec.dict("hr_api_config", None, null=True),
        }
        for provider in v["allowed_auth_providers"]:
            if provider not in PROVIDERS:
                rec.fail(
                    "allowed_auth_providers", f"unknown value {provider!r} (expected one of {', '.join(PROVIDERS)})"
                )
        if v["slug"] is None:
            v["slug"] = slugify(name)[:100] or lid[:100]
        given = rec.data.get("slug")
        v["slug"], owner = free_slug(ctx, v["slug"], lid)
        renamed = None
        if owner is not None:
            mapped.warnings.append(
                f"{where}: slug: {given if given is not None else name!r} is taken by {owner!r}; "
                f"stored as {v['slug']!r} (exported as written)"
            )
            if isinstance(given, str):
                renamed = [given, v["slug"]]
        set_timestamps(rec, v, "created_at", "updated_at")
        dangling = {}
        ldap_id = rec.str("ldap_config_id", None, null=True)
        if ldap_id is not None and not ctx.exists(LDAPConfig, ldap_id):
            dangling["ldap_config_id"] = ldap_id
            mapped.warnings.append(f"{where}: ldap_config_id: {ldap_id!r} refers to no LDAP config")
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, SLUG: renamed})
        mapped.rows.append(Row(Organization, v))
        return mapped

    def export_queryset(self):
        # The organization's directory, read with all organizations at once (not one query each).
        directories = LDAPConfig.all_orgs.filter(is_org_directory=True).order_by(*(LDAPConfig._meta.ordering or ["pk"]))
        return (
            super().export_queryset().prefetch_related(Prefetch("ldap_configs", directories, to_attr="org_directories"))
        )

    def to_legacy(self, org, ctx=None):
        ctx = ctx or Context()
        extra = org.legacy_extra or {}
        if hasattr(org, "org_directories"):
            ldap = next(((cfg.legacy_id, cfg.pk) for cfg in org.org_directories), None)
        else:
            ldap = (
                LDAPConfig.all_orgs.filter(org_id=org.pk, is_org_directory=True).values_list("legacy_id", "pk").first()
            )
        ldap_id = (extra.get(DANGLING) or {}).get("ldap_config_id")
        if ldap is not None:
            ldap_id = ldap[0] or str(ldap[1])
        renamed = extra.get(SLUG)
        out = {
            "id": org.legacy_id or str(org.pk),
            "name": org.name,
            "slug": renamed[0] if renamed and renamed[1] == org.slug else org.slug,
            "domain": org.domain,
            "logo_url": org.logo_url,
            "settings": org.settings,
            "allowed_auth_providers": org.allowed_auth_providers,
            "require_mfa": org.require_mfa,
            "allowed_email_domains": org.allowed_email_domains,
            "google_client_id": org.google_client_id,
            "google_client_secret": org.google_client_secret,
            "microsoft_client_id": org.microsoft_client_id,
            "microsoft_client_secret": org.microsoft_client_secret,
            "microsoft_tenant_id": org.microsoft_tenant_id,
            "ldap_config_id": ldap_id,
            "max_users": org.max_users,
            "max_agents": org.max_agents,
            "max_tools": org.max_tools,
            "status": org.status,
            "created_at": ts_out(org.created_at),
            "updated_at": ts_out(org.updated_at),
            "directory_source": org.directory_source,
            "hr_api_config": org.hr_api_config,
        }
        out.update(extra_items(extra))
        return omit_missing(out, extra, self.DEFAULTS)


def default_organization_record(now) -> dict:
    """``org_default`` as AgentForge's SecurityState creates it on first start (both eras: the
    fields of its first Organization model, with their defaults)."""
    stamp = ts_out(now)
    return {
        "id": "org_default",
        "name": "Default Organization",
        "slug": "default",
        "domain": None,
        "logo_url": None,
        "settings": {},
        "allowed_auth_providers": ["local", "google", "microsoft"],
        "require_mfa": False,
        "allowed_email_domains": [],
        "google_client_id": None,
        "google_client_secret": None,
        "microsoft_client_id": None,
        "microsoft_client_secret": None,
        "microsoft_tenant_id": None,
        "ldap_config_id": None,
        "max_users": 100,
        "max_agents": 50,
        "max_tools": 100,
        "status": "active",
        "created_at": stamp,
        "updated_at": stamp,
    }


# --- roles -------------------------------------------------------------------------------------


class RoleMapper(Mapper):
    model = Role
    satellites = (("role_permissions", RolePermission),)
    DEFAULTS = {
        "level": 100,
        "is_system": False,
        "permissions": [],
        "parent_id": None,
        "created_by": None,
        "description": None,
    }

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        org_id = security_file_org(rec, ctx, dangling)
        v = {
            "id": self.pk(lid),
            "legacy_id": lid,
            "org_id": org_id,
            "name": rec.str("name", max_length=255),
            "description": rec.str("description", None, null=True),
            "level": rec.int("level", 100),
            "is_system": rec.bool("is_system", False),
            "parent_id": field_ref(ctx, rec, Role, "parent_id", dangling, mapped, where, org=org_id),
            "created_by_id": field_ref(ctx, rec, User, "created_by", dangling, mapped, where, org=org_id),
        }
        set_timestamps(rec, v, "created_at", "updated_at")
        perms = rec.list("permissions", [], of=str)
        codes = list(dict.fromkeys(perms))
        lists = {"permissions": perms} if codes != sorted(codes) or len(codes) != len(perms) else None
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, LISTS: lists})
        mapped.rows.append(Row(Role, v))
        mapped.children.append(
            ChildSet(
                RolePermission,
                "role_id",
                v["id"],
                [{"org_id": org_id, "role_id": v["id"], "permission_id": ctx.permission_id(code)} for code in codes],
                ("permission_id",),
            )
        )
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
            codes = sorted(
                RolePermission.all_orgs.filter(role_id=role.pk).values_list("permission__codename", flat=True)
            )
        original = (extra.get(LISTS) or {}).get("permissions")
        out = {
            "id": role.legacy_id or str(role.pk),
            "org_id": org_legacy_id(ctx, role),
            "name": role.name,
            "description": role.description,
            "permissions": original_or_current(original, set(original or ()), codes),
            "parent_id": ctx.legacy_id_of(Role, role.parent_id) if role.parent_id else dangling.get("parent_id"),
            "level": role.level,
            "is_system": role.is_system,
            "created_at": ts_out(role.created_at),
            "updated_at": ts_out(role.updated_at),
            "created_by": ctx.legacy_id_of(User, role.created_by_id)
            if role.created_by_id
            else dangling.get("created_by"),
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
        org_id = security_file_org(rec, ctx, dangling)
        v = {
            "id": self.pk(lid),
            "legacy_id": lid,
            "org_id": org_id,
            "name": rec.str("name", max_length=255),
            "description": rec.str("description", None, null=True),
            "parent_id": field_ref(ctx, rec, Department, "parent_id", dangling, mapped, where, org=org_id),
            "manager_id": field_ref(ctx, rec, User, "manager_id", dangling, mapped, where, org=org_id),
        }
        return finish_row(rec, v, Department, mapped, dangling)

    def to_legacy(self, dept, ctx=None):
        ctx = ctx or Context()
        extra = dept.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        out = {
            "id": dept.legacy_id or str(dept.pk),
            "org_id": org_legacy_id(ctx, dept),
            "name": dept.name,
            "description": dept.description,
            "parent_id": ctx.legacy_id_of(Department, dept.parent_id) if dept.parent_id else dangling.get("parent_id"),
            "manager_id": ctx.legacy_id_of(User, dept.manager_id) if dept.manager_id else dangling.get("manager_id"),
            "created_at": ts_out(dept.created_at),
            "updated_at": ts_out(dept.updated_at),
        }
        out.update(extra_items(extra))
        return omit_missing(out, extra, self.DEFAULTS)


# --- users ---------------------------------------------------------------------------------------


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


PROFILE_USER_FIELDS = {
    "first_name": 150,
    "last_name": 150,
    "display_name": 255,
    "avatar_url": None,
    "phone": 50,
    "job_title": 255,
    "location": 255,
    "bio": None,
}
USER_DEFAULTS = {
    "has_admin_access": False,
    "has_enduser_access": True,
    "manager_id": None,
    "employee_id": None,
    "direct_permissions": [],
    "group_ids": [],
    "role_ids": [],
    "password_history": [],
    "failed_login_attempts": 0,
    "must_change_password": False,
    "created_by": None,
    "last_login_ip": None,
    "external_id": None,
    "department_id": None,
    "verification_token": None,
    "verification_token_expires": None,
    "reset_password_token": None,
    "reset_password_expires": None,
    "locked_until": None,
    "password_changed_at": None,
    "last_login": None,
    "last_active": None,
    "status": "active",
    "email_verified": False,
    "auth_provider": "local",
}
MFA_DEFAULTS = {
    "enabled": False,
    "methods": [],
    "totp_secret": None,
    "totp_verified": False,
    "backup_codes": [],
    "backup_codes_generated_at": None,
    "phone_number": None,
    "phone_verified": False,
    "email_code": None,
    "email_code_expires": None,
    "sms_code": None,
    "sms_code_expires": None,
    "last_used": None,
    "recovery_email": None,
}
PROFILE_DEFAULTS = {
    "display_name": None,
    "avatar_url": None,
    "phone": None,
    "job_title": None,
    "location": None,
    "bio": None,
    "timezone": "UTC",
    "language": "en",
    "custom_attributes": {},
}
SALTS = "__two_part_salts__"
RAW_PASSWORD = "__password_hash__"
PROFILE = "__profile__"
MFA = "__mfa__"


class UserMapper(Mapper):
    model = User
    satellites = (
        ("mfa_settings", MFASettings),
        ("user_preferences", "settings_app.UserPreference"),
        ("user_roles", UserRole),
        ("password_history", PasswordHistory),
    )

    def map_record(self, record, ctx):
        """One user → its User row, MFA settings, preferences, ordered roles and password history.

        The steps read the record's keys in a fixed order: the first bad field is the one
        reported, and keys absent in the source are remembered in that order."""
        rec, lid, mapped, where = self.begin(record)
        # dangling: references to nothing; bookkeeping: what the export needs to give the record
        # back as it was; salts: of the two-part legacy hashes (their export form needs them).
        dangling, salts, bookkeeping = {}, set(), {}
        pk = self.pk(lid)
        org_id = security_file_org(rec, ctx, dangling)
        v = {"id": pk, "legacy_id": lid, "org_id": org_id, **self._email(rec)}
        v["password"] = self._password(rec, salts, bookkeeping, mapped, where)
        v["auth_provider"] = rec.enum("auth_provider", AuthProvider.choices, "local")
        v["external_id"] = rec.str("external_id", None, null=True, max_length=255)
        name_columns, preferences = self._profile(rec, record, bookkeeping)
        v.update(name_columns)
        v["department_id"] = field_ref(ctx, rec, Department, "department_id", dangling, mapped, where, org=org_id)
        v["manager_id"] = field_ref(ctx, rec, User, "manager_id", dangling, mapped, where, org=org_id)
        v["created_by_id"] = field_ref(ctx, rec, User, "created_by", dangling, mapped, where, org=org_id)
        v["employee_id"] = rec.str("employee_id", None, null=True, max_length=100)
        v["direct_permissions"] = rec.list("direct_permissions", [], of=str)
        v["status"] = rec.enum("status", User.Status.choices, "active")
        v["email_verified"] = rec.bool("email_verified", False)
        v.update(self._account_tokens(rec, ctx.now, v["email_verified"], mapped))
        v.update(self._sign_in_state(rec, dangling))
        v["has_admin_access"] = rec.bool("has_admin_access", False)
        v["has_enduser_access"] = rec.bool("has_enduser_access", True)
        set_timestamps(rec, v, "created_at", "updated_at")
        role_links = self._role_links(rec, ctx, pk, org_id, dangling, mapped, where)
        self._check_group_ids(rec, record, ctx, bookkeeping, mapped, where)
        history_rows = self._password_history(rec, pk, org_id, salts)
        mfa = self._mfa(rec, record, lid, pk, org_id, ctx.now, salts, bookkeeping, mapped)
        if salts:
            bookkeeping[SALTS] = sorted(salts)

        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None}, **bookkeeping)
        mapped.rows.append(Row(User, v))
        mapped.rows.append(Row(MFASettings, mfa))
        mapped.rows.append(
            Row(UserPreference, {"org_id": org_id, "user_id": pk, **preferences}, key_fields=("user_id",))
        )
        mapped.children.append(ChildSet(UserRole, "user_id", pk, role_links, ("role_id", "position")))
        mapped.children.append(ChildSet(PasswordHistory, "user_id", pk, history_rows, ("password_hash", "position")))
        return mapped

    @staticmethod
    def _email(rec: Rec) -> dict:
        email = rec.str("email", max_length=254)
        if not email.strip():
            rec.fail("email", "is empty")
        return {"email": email, "email_normalized": normalize_email_address(email)}

    @staticmethod
    def _password(rec: Rec, salts: set, bookkeeping: dict, mapped: Mapped, where: str) -> str:
        """The Django form of ``password_hash``; an empty or unknown one leaves the account
        without a usable password and is kept for the export."""
        raw_hash = rec.str("password_hash", None, null=True)
        if raw_hash is None or raw_hash == "":
            if raw_hash == "":
                bookkeeping[RAW_PASSWORD] = ""
            return passwords.UNUSABLE
        converted, ok = _hash_in(raw_hash, salts)
        if ok:
            return converted
        bookkeeping[RAW_PASSWORD] = raw_hash
        mapped.warnings.append(f"{where}: password_hash: not in a known format; the account gets no usable password")
        return passwords.UNUSABLE

    @staticmethod
    def _nested_book(nested: Rec, record: dict, key: str) -> dict:
        """What the export needs to give a nested object (profile, mfa) back as it was: its
        unknown keys, the keys it lacked, or that it was absent altogether."""
        book = nested.extra()
        if nested.missing:
            book[MISSING_KEY] = nested.missing
        if key not in record:
            book["__absent__"] = True
        return book

    def _profile(self, rec: Rec, record: dict, bookkeeping: dict) -> tuple[dict, dict]:
        """``profile`` → (the user's name and contact columns, the preferences row's values)."""
        profile = Rec(rec.dict("profile", {}), "profile.")
        columns = {}
        for name, max_length in PROFILE_USER_FIELDS.items():
            if name in ("first_name", "last_name"):
                columns[name] = profile.str(name, "", max_length=max_length) or ""
                if profile.data.get(name) is None and name in profile.data:
                    profile.fail(name, "expected a string, got null")
            else:
                columns[name] = profile.str(name, None, null=True, max_length=max_length)
        preferences = {
            "timezone": profile.str("timezone", "UTC", max_length=64),
            "language": profile.str("language", "en", max_length=16),
            "custom_attributes": profile.dict("custom_attributes", {}),
        }
        book = self._nested_book(profile, record, "profile")
        if book:
            bookkeeping[PROFILE] = book
        return columns, preferences

    @staticmethod
    def _account_tokens(rec: Rec, now, email_verified: bool, mapped: Mapped) -> dict:
        """Verification and password-reset tokens, kept as SHA-256 while still valid; a stale
        one is dropped (stale secrets stay dead, docs/legacy-format.md §10.5)."""
        values = {}
        token = rec.str("verification_token", None, null=True)
        expires = values["verification_token_expires"] = rec.ts("verification_token_expires", None, null=True)
        values["verification_token_hash"] = None
        if token:
            expired = expires is not None and expires <= now
            if email_verified or expired:
                mapped.notes.append("stale verification token not imported")
            else:
                values["verification_token_hash"] = sha256_hex(token)
        token = rec.str("reset_password_token", None, null=True)
        expires = values["reset_password_expires"] = rec.ts("reset_password_expires", None, null=True)
        values["reset_password_token_hash"] = None
        if token:
            if expires is None or expires <= now:
                mapped.notes.append("expired password-reset token not imported")
            else:
                values["reset_password_token_hash"] = sha256_hex(token)
        return values

    @staticmethod
    def _sign_in_state(rec: Rec, dangling: dict) -> dict:
        """Lockout, password age and last sign-in; an unparsable IP address is kept as dangling."""
        values = {
            "failed_login_attempts": rec.int("failed_login_attempts", 0),
            "locked_until": rec.ts("locked_until", None, null=True),
            "password_changed_at": rec.ts("password_changed_at", None, null=True),
            "must_change_password": rec.bool("must_change_password", False),
            "last_login": rec.ts("last_login", None, null=True),
            "last_active": rec.ts("last_active", None, null=True),
        }
        ip, bad_ip = rec.ip("last_login_ip")
        values["last_login_ip"] = ip
        if bad_ip is not None:
            dangling["last_login_ip"] = bad_ip
        return values

    @staticmethod
    def _role_links(rec: Rec, ctx: Context, pk, org_id, dangling: dict, mapped: Mapped, where: str) -> list:
        """``role_ids`` → user_roles rows in order; dangling ids and roles of another
        organization are kept for the export instead."""
        resolved = split_refs(ctx, Role, rec.list("role_ids", [], of=str), "role_ids", dangling, mapped.warnings, where)
        resolved = own_org_refs(ctx, Role, resolved, org_id, "role_ids", dangling, mapped.warnings, where)
        return [{"org_id": org_id, "user_id": pk, "role_id": rpk, "position": pos} for pos, _, rpk in resolved]

    @staticmethod
    def _check_group_ids(rec: Rec, record: dict, ctx: Context, bookkeeping: dict, mapped: Mapped, where: str) -> None:
        """``group_ids`` makes no rows (memberships come from the groups file): the list is kept
        for the export and its dangling ids are warned about."""
        group_ids = rec.list("group_ids", [], of=str)
        if group_ids or record.get("group_ids") == []:
            bookkeeping[LISTS] = {"group_ids": group_ids}
        for gid in group_ids:
            if not ctx.exists(Group, gid):
                mapped.warnings.append(f"{where}: group_ids: {gid!r} refers to no group")

    @staticmethod
    def _password_history(rec: Rec, pk, org_id, salts: set) -> list:
        """``password_history`` (oldest first) → password_history rows in Django's hash form."""
        return [
            {"org_id": org_id, "user_id": pk, "password_hash": _hash_in(entry, salts)[0], "position": position}
            for position, entry in enumerate(rec.list("password_history", [], of=str))
        ]

    def _mfa(
        self, rec: Rec, record: dict, lid: str, pk, org_id, now, salts: set, bookkeeping: dict, mapped: Mapped
    ) -> dict:
        """``mfa`` → the MFA settings row: backup codes in Django's hash form, one-time codes
        kept as SHA-256 while still valid."""
        mfa_rec = Rec(rec.dict("mfa", {}), "mfa.")
        mfa = {
            "id": legacy_uuid("mfa_settings", lid),
            "org_id": org_id,
            "user_id": pk,
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
        book = self._nested_book(mfa_rec, record, "mfa")
        if book:
            bookkeeping[MFA] = book
        return mfa

    def export_queryset(self):
        # Everything to_legacy reads of a user, for all users in a fixed number of queries.
        return (
            super()
            .export_queryset()
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
        if hasattr(user, "role_links"):
            prefs = getattr(user, "preferences", None) if hasattr(user, "preferences") else None
            mfa = user.mfa if hasattr(user, "mfa") else None
            return (
                prefs,
                mfa,
                [link.role_id for link in user.role_links],
                [link.group for link in user.group_links],
                [entry.password_hash for entry in user.history_rows],
            )
        groups = list(Group.all_orgs.filter(memberships__user_id=user.pk).order_by("created_at", "legacy_id"))
        return (
            UserPreference.all_orgs.filter(user_id=user.pk).first(),
            MFASettings.all_orgs.filter(user_id=user.pk).first(),
            list(UserRole.all_orgs.filter(user_id=user.pk).order_by("position").values_list("role_id", flat=True)),
            groups,
            list(
                PasswordHistory.all_orgs.filter(user_id=user.pk)
                .order_by("position")
                .values_list("password_hash", flat=True)
            ),
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
        profile = {
            "first_name": user.first_name,
            "last_name": user.last_name,
            "display_name": user.display_name,
            "avatar_url": user.avatar_url,
            "phone": user.phone,
            "timezone": prefs.timezone if prefs else "UTC",
            "language": prefs.language if prefs else "en",
            "job_title": user.job_title,
            "location": user.location,
            "bio": user.bio,
            "custom_attributes": prefs.custom_attributes if prefs else {},
        }
        profile_book = extra.get(PROFILE) or {}
        profile.update(extra_items(profile_book))
        omit_missing(profile, profile_book, PROFILE_DEFAULTS)

        mfa_book = extra.get(MFA) or {}
        mfa = {}
        if mfa_row is not None:
            mfa = {
                "enabled": mfa_row.enabled,
                "methods": mfa_row.methods,
                "totp_secret": mfa_row.totp_secret,
                "totp_verified": mfa_row.totp_verified,
                "backup_codes": [_hash_out(code, salts) for code in mfa_row.backup_codes],
                "backup_codes_generated_at": ts_out(mfa_row.backup_codes_generated_at),
                "phone_number": mfa_row.phone_number,
                "phone_verified": mfa_row.phone_verified,
                "email_code": None,
                "email_code_expires": ts_out(mfa_row.email_code_expires),
                "sms_code": None,
                "sms_code_expires": ts_out(mfa_row.sms_code_expires),
                "last_used": ts_out(mfa_row.last_used),
                "recovery_email": mfa_row.recovery_email,
            }
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
            "id": user.legacy_id or str(user.pk),
            "org_id": org_legacy_id(ctx, user),
            "email": user.email,
            "password_hash": password_hash,
            "auth_provider": user.auth_provider,
            "external_id": user.external_id,
            "profile": profile,
            "mfa": mfa,
            "department_id": ctx.legacy_id_of(Department, user.department_id)
            if user.department_id
            else dangling.get("department_id"),
            "group_ids": group_ids,
            "role_ids": role_ids,
            "direct_permissions": user.direct_permissions,
            "status": user.status,
            "email_verified": user.email_verified,
            "verification_token": None,
            "verification_token_expires": ts_out(user.verification_token_expires),
            "reset_password_token": None,
            "reset_password_expires": ts_out(user.reset_password_expires),
            "password_history": history,
            "failed_login_attempts": user.failed_login_attempts,
            "locked_until": ts_out(user.locked_until),
            "password_changed_at": ts_out(user.password_changed_at),
            "must_change_password": user.must_change_password,
            "last_login": ts_out(user.last_login),
            "last_active": ts_out(user.last_active),
            "last_login_ip": user.last_login_ip or dangling.get("last_login_ip"),
            "created_at": ts_out(user.created_at),
            "updated_at": ts_out(user.updated_at),
            "created_by": ctx.legacy_id_of(User, user.created_by_id)
            if user.created_by_id
            else dangling.get("created_by"),
            "has_admin_access": user.has_admin_access,
            "has_enduser_access": user.has_enduser_access,
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
        org_id = security_file_org(rec, ctx, dangling)
        pk = self.pk(lid)
        v = {
            "id": pk,
            "legacy_id": lid,
            "org_id": org_id,
            "name": rec.str("name", max_length=255),
            "description": rec.str("description", None, null=True),
        }
        set_timestamps(rec, v, "created_at", "updated_at")
        user_ids = rec.list("user_ids", [], of=str)
        member_ids = rec.list("member_ids", [], of=str)
        role_ids = rec.list("role_ids", [], of=str)
        claimed = (ctx.raw.get("user_groups") or {}).get(lid, [])
        members = []
        for uid in dict.fromkeys([*user_ids, *member_ids, *claimed]):
            upk = ctx.ref(User, uid)
            if upk is None:
                mapped.warnings.append(f"{where}: user_ids: {uid!r} refers to no user")
            elif referenced_org(ctx, User, uid, upk) not in (org_id, None):  # kept in the lists only
                mapped.warnings.append(f"{where}: user_ids: {uid!r} belongs to another organization (not a member)")
            else:
                members.append(upk)
        roles = split_refs(ctx, Role, role_ids, "role_ids", dangling, mapped.warnings, where)
        roles = own_org_refs(ctx, Role, roles, org_id, "role_ids", dangling, mapped.warnings, where)
        lists = {"user_ids": user_ids, "member_ids": member_ids, "role_ids": role_ids}
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, LISTS: lists})
        mapped.rows.append(Row(Group, v))
        mapped.children.append(
            ChildSet(
                GroupMembership,
                "group_id",
                pk,
                [{"org_id": org_id, "group_id": pk, "user_id": u} for u in members],
                ("user_id",),
            )
        )
        mapped.children.append(
            ChildSet(
                GroupRole,
                "group_id",
                pk,
                [{"org_id": org_id, "group_id": pk, "role_id": r} for _, _, r in roles],
                ("role_id",),
            )
        )
        return mapped

    def export_queryset(self):
        # Members (with their rows) and roles of every group in a fixed number of queries.
        return (
            super()
            .export_queryset()
            .prefetch_related(
                Prefetch(
                    "memberships",
                    GroupMembership.all_orgs.select_related("user").order_by("user__email"),
                    to_attr="member_links",
                ),
                Prefetch("group_roles", GroupRole.all_orgs.order_by("pk"), to_attr="role_links"),
            )
        )

    def to_legacy(self, group, ctx=None):
        ctx = ctx or Context()
        extra = group.legacy_extra or {}
        lists = extra.get(LISTS) or {}
        if hasattr(group, "member_links"):
            member_users = [link.user for link in group.member_links]
            role_pks = [link.role_id for link in group.role_links]
        else:
            member_users = [
                link.user
                for link in GroupMembership.all_orgs.filter(group_id=group.pk)
                .select_related("user")
                .order_by("user__email")
            ]
            role_pks = list(
                GroupRole.all_orgs.filter(group_id=group.pk).order_by("pk").values_list("role_id", flat=True)
            )
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
            "id": group.legacy_id or str(group.pk),
            "org_id": org_legacy_id(ctx, group),
            "name": group.name,
            "description": group.description,
            "user_ids": out_users,
            "role_ids": original_or_current(role_original, {r for r in role_original or () if ctx.ref(Role, r)}, roles),
            "created_at": ts_out(group.created_at),
            "updated_at": ts_out(group.updated_at),
            "member_ids": out_members,
        }
        out.update(extra_items(extra))
        return omit_missing(out, extra, self.DEFAULTS)
