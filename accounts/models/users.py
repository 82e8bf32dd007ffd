"""The user model (logs in by email, unique per organization) and its satellites."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.utils import timezone

from accounts.models.directory import GroupRole, role_permission_codes
from accounts.models.organizations import AuthProvider, Organization
from agentforge_core.crypto import sha256_hex
from agentforge_core.fields import EncryptedTextField
from agentforge_core.models import (
    HeldToActiveOrg,
    LegacyRecordModel,
    OrgCheckedWrites,
    OrgOwnedModel,
    OrgScopedQuerySet,
    TimestampedModel,
    apply_org_scope,
    held_to_active_org,
    is_org_scoped,
    org_foreign_key,
    org_index,
)
from agentforge_core.tenancy import ALL_ORGS, current_org, current_org_id, resolve_org
from agentforge_site.caching import cached


def normalize_email_address(email: str) -> str:
    return (email or "").strip().lower()


class UserQuerySet(OrgScopedQuerySet):
    """Bulk writes check the organization of each user and its links, as User.save() does."""

    def for_org(self, org):
        """One organization's users (object, UUID or legacy id)."""
        return self.filter(org_id=resolve_org(org))

    def in_current_org(self):
        """The active organization's users; raises OrgScopeError when none is active."""
        return self.filter(org_id=current_org_id())

    def by_email(self, email: str):
        return self.filter(email_normalized=normalize_email_address(email))


class UserManager(BaseUserManager.from_queryset(UserQuerySet)):
    """``User.all_orgs``: every organization's users, for authentication and system work.

    Authentication finds users by email before any organization is known.
    """

    use_in_migrations = True

    def _create_user(self, email, password, **extra):
        if not email:
            raise ValueError("an email address is required")
        if extra.get("org") is None and extra.get("org_id") is None:
            active = current_org()
            if active is not None and active is not ALL_ORGS:
                extra["org_id"] = active
            else:
                extra["org"] = Organization.get_default()
        user = self.model(email=email.strip(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email, password=None, **extra):
        extra.update(is_staff=True, is_superuser=True, has_admin_access=True)
        return self._create_user(email, password, **extra)

    def get_by_natural_key(self, email, org=None):
        """The user with this email in one organization: ``org``, else the active one, else the default.

        An email is unique only within an organization, so the key is ``(email, org)``.
        Given the email alone (Django's ``createsuperuser`` checks whether the address
        is taken; fixtures of a single-tenant install), it names the user of the
        organization in effect: the active one, or, with none active (or inside
        ``unscoped()``), the default organization, where ``create_superuser`` puts a new
        user. It never matches several users.
        """
        if org is not None:
            org_id = resolve_org(org)
        elif current_org() not in (None, ALL_ORGS):
            org_id = current_org()
        else:  # looked up, not created: a read does not make the default organization
            org_id = Organization.all_orgs.filter(legacy_id="org_default").values_list("pk", flat=True).first()
        users = self.model.all_orgs.db_manager(self.db).all()
        if is_org_scoped(self.get_queryset().query):
            # User.objects: inside an organization's scope another one's user is no user, as
            # row-level security has it on PostgreSQL (with none active, sign-in: every user).
            users = held_to_active_org(users)
        return users.get(org_id=org_id, email_normalized=normalize_email_address(email))


class ScopedUserManager(UserManager):
    """``User.objects``: the active organization's users only; raises when none is active.

    Like every tenant table: joins from here (``values_list("mfa__totp_secret")``) stay
    in the active organization. Sign-in, session lookups and system work use
    ``User.all_orgs`` (see ``accounts.backends``).
    """

    def get_queryset(self):
        return apply_org_scope(super().get_queryset())


class User(OrgCheckedWrites, HeldToActiveOrg, LegacyRecordModel, AbstractBaseUser, PermissionsMixin, TimestampedModel):
    class Status(models.TextChoices):
        ACTIVE = "active"
        INACTIVE = "inactive"
        PENDING = "pending"
        LOCKED = "locked"
        SUSPENDED = "suspended"

    # Who may use the application (is_active); API-key checks read the status column alone.
    ACTIVE_STATUSES = (Status.ACTIVE, Status.LOCKED)

    org = org_foreign_key("users")
    email = models.EmailField(max_length=254, help_text="As entered; compared case-insensitively.")
    # Lower-cased copy that carries the per-organization uniqueness on every backend
    # (MariaDB and SQL Server have no functional unique indexes).
    email_normalized = models.CharField(max_length=254, editable=False, db_index=True)
    # Room for Django's pbkdf2_sha256 form of the legacy hashes (about 130 characters).
    password = models.CharField("password", max_length=255)
    auth_provider = models.CharField(max_length=20, choices=AuthProvider.choices, default=AuthProvider.LOCAL)
    external_id = models.CharField(max_length=255, null=True, blank=True)

    first_name = models.CharField(max_length=150, blank=True, default="")
    last_name = models.CharField(max_length=150, blank=True, default="")
    display_name = models.CharField(max_length=255, null=True, blank=True)
    avatar_url = models.TextField(null=True, blank=True)
    phone = models.CharField(max_length=50, null=True, blank=True)
    job_title = models.CharField(max_length=255, null=True, blank=True)
    location = models.CharField(max_length=255, null=True, blank=True)
    bio = models.TextField(null=True, blank=True)

    department = models.ForeignKey(
        "accounts.Department", on_delete=models.SET_NULL, null=True, blank=True, related_name="users"
    )
    manager = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="reports")
    employee_id = models.CharField(max_length=100, null=True, blank=True)
    roles = models.ManyToManyField("accounts.Role", through="accounts.UserRole", related_name="users", blank=True)
    direct_permissions = models.JSONField(default=list, blank=True)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    email_verified = models.BooleanField(default=False)
    # One-time tokens are stored only as SHA-256 digests.
    verification_token_hash = models.CharField(max_length=64, null=True, blank=True, editable=False)
    verification_token_expires = models.DateTimeField(null=True, blank=True)
    reset_password_token_hash = models.CharField(max_length=64, null=True, blank=True, editable=False)
    reset_password_expires = models.DateTimeField(null=True, blank=True)

    failed_login_attempts = models.IntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)
    password_changed_at = models.DateTimeField(null=True, blank=True)
    must_change_password = models.BooleanField(default=False)
    last_active = models.DateTimeField(null=True, blank=True)
    last_login_ip = models.GenericIPAddressField(null=True, blank=True)
    created_by = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    has_admin_access = models.BooleanField(default=False)
    has_enduser_access = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="May sign in to the admin console.")

    objects = ScopedUserManager()
    all_orgs = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        db_table = "users"
        ordering = ["email"]
        constraints = [
            models.UniqueConstraint(fields=["org", "email_normalized"], name="users_org_email_uniq"),
        ]
        indexes = [
            models.Index(fields=["email"], name="users_email_idx"),
            models.Index(fields=["org", "email"], name="users_org_email_idx"),
            models.Index(fields=["org", "status"], name="users_org_status_idx"),
        ]

    def __str__(self):
        return self.email

    def save(self, *args, **kwargs):
        self.email_normalized = normalize_email_address(self.email)
        if kwargs.get("update_fields") is not None and "email" in kwargs["update_fields"]:
            kwargs["update_fields"] = {*kwargs["update_fields"], "email_normalized"}
        super().save(*args, **kwargs)

    def natural_key(self):
        return (self.email, str(self.org_id))

    @property
    def is_active(self) -> bool:
        # As in AgentForge, only active accounts use the application: pending (email not
        # verified), suspended and inactive ones are refused (accounts.backends says why).
        # A lock is time-bound and checked by the auth backend; an expired one is lifted.
        return self.status in self.ACTIVE_STATUSES

    @is_active.setter
    def is_active(self, value: bool) -> None:
        self.status = self.Status.ACTIVE if value else self.Status.INACTIVE

    @property
    def is_locked(self) -> bool:
        return self.locked_until is not None and self.locked_until > timezone.now()

    def get_full_name(self) -> str:
        """The legacy display-name rule."""
        if self.display_name:
            return self.display_name
        full = f"{self.first_name} {self.last_name}".strip()
        return full or self.email.split("@")[0]

    def get_short_name(self) -> str:
        return self.first_name or self.email.split("@")[0]

    def effective_permissions(self) -> set[str]:
        """direct_permissions ∪ roles (with their ancestors) ∪ the roles of the user's groups."""
        # The role part is cached per (organization, user) until a role, grant, membership
        # or the catalog changes; direct_permissions are on the row already loaded.
        return set(self.direct_permissions or []) | cached(
            "role_permissions", self.org_id, self._role_permissions, self.pk
        )

    def _role_permissions(self) -> frozenset[str]:
        # Held to the active organization: a user keyed to another organization's row reads none of its roles.
        roles = held_to_active_org(UserRole.all_orgs.filter(user=self))
        group_roles = held_to_active_org(GroupRole.all_orgs.filter(group__memberships__user=self))
        role_ids = set(roles.values_list("role_id", flat=True)) | set(group_roles.values_list("role_id", flat=True))
        return frozenset(role_permission_codes(role_ids))

    def has_agentforge_permission(self, codename: str) -> bool:
        codes = self.effective_permissions()
        return "system:admin" in codes or codename in codes


class UserRole(OrgOwnedModel):
    org = org_foreign_key("+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="user_roles", db_index=False
    )
    role = models.ForeignKey("accounts.Role", on_delete=models.CASCADE, related_name="user_roles")
    position = models.PositiveIntegerField(default=0, help_text="Order in the legacy role_ids list.")

    class Meta:
        db_table = "user_roles"
        constraints = [models.UniqueConstraint(fields=["user", "role"], name="user_roles_uniq")]
        indexes = [org_index("user_roles", "user")]


class UserSession(OrgOwnedModel):
    """A login session. Only the SHA-256 of the session token is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = org_foreign_key("user_sessions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sessions")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True, default="")
    remember_me = models.BooleanField(default=False)
    mfa_verified = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "user_sessions"
        indexes = [
            org_index("user_sessions", "user"),
            models.Index(fields=["expires_at"], name="user_sess_expires_idx"),
        ]

    @classmethod
    def hash_token(cls, token: str) -> str:
        return sha256_hex(token)


class MFASettings(OrgOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = org_foreign_key("+")
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mfa")
    enabled = models.BooleanField(default=False)
    methods = models.JSONField(default=list, blank=True)
    totp_secret = EncryptedTextField(null=True, blank=True)
    totp_verified = models.BooleanField(default=False)
    # Hashed like passwords (Django hasher format); a code is used up once it matches.
    backup_codes = models.JSONField(default=list, blank=True)
    backup_codes_generated_at = models.DateTimeField(null=True, blank=True)
    phone_number = models.CharField(max_length=50, null=True, blank=True)
    phone_verified = models.BooleanField(default=False)
    email_code_hash = models.CharField(max_length=64, null=True, blank=True, editable=False)
    email_code_expires = models.DateTimeField(null=True, blank=True)
    sms_code_hash = models.CharField(max_length=64, null=True, blank=True, editable=False)
    sms_code_expires = models.DateTimeField(null=True, blank=True)
    last_used = models.DateTimeField(null=True, blank=True)
    recovery_email = models.EmailField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "mfa_settings"
        verbose_name = "MFA settings"
        verbose_name_plural = "MFA settings"
        indexes = [org_index("mfa_settings", "enabled")]

    @property
    def is_active(self) -> bool:
        """MFA counts only when enabled and, for TOTP, verified: a stale secret is not MFA."""
        if not self.enabled:
            return False
        return self.methods != ["totp"] or self.totp_verified


class PasswordHistory(OrgOwnedModel):
    org = org_foreign_key("+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="password_history")
    password_hash = models.CharField(max_length=255)
    position = models.PositiveIntegerField(default=0, help_text="0 = oldest, as in the legacy list.")
    created_at = models.DateTimeField(null=True, blank=True, help_text="Unknown for imported entries.")

    class Meta:
        db_table = "password_history"
        ordering = ["user", "position"]
        verbose_name_plural = "password history"
        indexes = [org_index("password_history", "user")]
