"""Admin for organizations, the directory (departments, groups, roles, permissions) and users."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import (
    ReadOnlyPasswordHashField,
    SetPasswordMixin,
    SetUnusablePasswordMixin,
)
from django.contrib.auth.models import Group as DjangoGroup
from django.db import models
from django.db.models import Prefetch
from django.utils import timezone
from django.utils.html import format_html

from accounts.backends import login_refusal
from accounts.models import (
    Department,
    Group,
    GroupMembership,
    GroupRole,
    MFASettings,
    Organization,
    PasswordHistory,
    Permission,
    Role,
    RolePermission,
    User,
    UserRole,
    UserSession,
    normalize_email_address,
)
from accounts.models.directory import role_permission_codes
from accounts.privileges import lacking
from agentforge_agents.models import Agent
from agentforge_site.admin.display import count_subquery, truncate
from agentforge_site.admin.mixins import (
    CreatedByAdminMixin,
    ReadOnlyAdminMixin,
    SecretFieldsMixin,
    SuperuserWritesMixin,
)
from agentforge_site.admin.scoping import (
    HeldJoinsMixin,
    OrgScopedAdmin,
    ScopedTabularInline,
    UserCredentialsAdminMixin,
    is_superuser,
    outranking_ids,
)


class AdminLoginForm(AdminAuthenticationForm):
    """The admin login, with AgentForge's answer when the password was right but the account's
    status refuses it (pending, suspended, inactive); anything else keeps Django's message."""

    def clean(self):
        try:
            return super().clean()
        except forms.ValidationError:
            reason = login_refusal.get()
            if reason:
                raise forms.ValidationError(reason, code="refused") from None
            raise


admin.site.login_form = AdminLoginForm

# --------------------------------------------------------------------------------------
# Grants: nobody grants what they do not hold
# --------------------------------------------------------------------------------------


def _role_codes(roles) -> set:
    return role_permission_codes([role.pk for role in roles])  # ancestors included


def _permission_codes(permissions) -> set:
    return {permission.codename for permission in permissions}


def _items(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, models.Model) else list(value)


def _key(item):
    return item.pk if isinstance(item, models.Model) else item


class HeldGrantsFormMixin:
    """Each field of ``grants`` (name -> the permission strings its chosen rows grant) takes, from
    ``granting_user``, only additions whose permissions they hold; what was there may stay or go."""

    granting_user = None
    grants: dict = {}
    lacking = None  # (user, permissions) -> those the user does not hold; set by HeldGrantsAdminMixin
    REFUSED = "You cannot grant what you do not hold yourself: %s."

    def clean(self):
        cleaned = super().clean()
        for name, codes_of in self.grants.items():
            if name not in cleaned:
                continue  # not on the form, or already in error: nothing of it is saved
            before = {_key(item) for item in _items(self.initial.get(name))}
            added = [item for item in _items(cleaned[name]) if _key(item) not in before]
            missing = self.lacking(self.granting_user, codes_of(added))
            if missing:
                self.add_error(name, self.REFUSED % ", ".join(sorted(missing)))
        return cleaned


class HeldGrantsAdminMixin:
    """An organization admin grants only what they hold (Kubernetes' escalation prevention): the
    form refuses adding what they lack, and a row above them (``above_admin``) is not theirs to
    change or delete. Superusers grant anything."""

    grants: dict = {}
    lacking = staticmethod(lacking)  # AgentForge's permissions; Django's groups compare their own

    def above_admin(self, request, obj) -> bool:
        """Whether ``obj`` carries privileges the (non-superuser) admin of ``request`` lacks."""
        raise NotImplementedError

    def _refused(self, request, obj) -> bool:
        return obj is not None and obj.pk is not None and not is_superuser(request) and self.above_admin(request, obj)

    def has_change_permission(self, request, obj=None):
        return not self._refused(request, obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return not self._refused(request, obj) and super().has_delete_permission(request, obj)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if is_superuser(request):
            return form
        attrs = {
            "__module__": form.__module__,
            "granting_user": request.user,
            "grants": self.grants,
            "lacking": staticmethod(self.lacking),
        }
        return type(form.__name__, (HeldGrantsFormMixin, form), attrs)


# Django's groups (admin-console permissions) are global and reach the users: held like the
# permission catalog for a staff user allowed to see them (``?user__id=`` of another organization).
if admin.site.is_registered(DjangoGroup):
    admin.site.unregister(DjangoGroup)


def _permission_names(permissions) -> set[str]:
    """``app_label.codename`` of Django permissions, as ``User.get_all_permissions()`` names them."""
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions}


def _lacking_admin_permissions(user, names) -> set[str]:
    return set() if user.is_superuser else set(names) - user.get_all_permissions()


@admin.register(DjangoGroup)
class DjangoGroupAdminHeld(HeldGrantsAdminMixin, HeldJoinsMixin, DjangoGroupAdmin):
    """Django's groups (admin-console permissions) under the same rule as AgentForge's roles and
    groups, compared with ``User.get_all_permissions()``: otherwise a member of a group who may
    change it would add any model permission to it."""

    grants = {"permissions": _permission_names}
    lacking = staticmethod(_lacking_admin_permissions)

    def above_admin(self, request, obj) -> bool:
        return bool(self.lacking(request.user, _permission_names(obj.permissions.select_related("content_type"))))


# --------------------------------------------------------------------------------------
# Organizations
# --------------------------------------------------------------------------------------


@admin.register(Organization)
class OrganizationAdmin(SecretFieldsMixin, OrgScopedAdmin):
    list_display = (
        "name",
        "slug",
        "status",
        "domain",
        "user_count",
        "agent_count",
        "require_mfa",
        "directory_source",
        "created_at",
    )
    list_filter = ("status", "directory_source", "require_mfa")
    search_fields = ("name", "slug", "domain", "legacy_id")
    readonly_fields = ("legacy_id", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "slug", "domain", "logo_url", "status")}),
        ("Sign-in", {"fields": ("allowed_auth_providers", "require_mfa", "allowed_email_domains")}),
        (
            "Google and Microsoft sign-in",
            {
                "fields": (
                    "google_client_id",
                    "google_client_secret",
                    "microsoft_client_id",
                    "microsoft_client_secret",
                    "microsoft_tenant_id",
                )
            },
        ),
        ("Limits", {"fields": ("max_users", "max_agents", "max_tools")}),
        ("Directory", {"fields": ("directory_source", "hr_api_config", "settings")}),
        ("Record", {"fields": ("legacy_id", "created_at", "updated_at"), "classes": ("collapse",)}),
    )
    # Platform-level switches only a superuser may flip.
    superuser_only_fields = ("slug", "status", "max_users", "max_agents", "max_tools")

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_users=count_subquery(User, "org"), _agents=count_subquery(Agent, "org"))
        )

    @admin.display(description="users", ordering="_users")
    def user_count(self, obj):
        return obj._users

    @admin.display(description="agents", ordering="_agents")
    def agent_count(self, obj):
        return obj._agents

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not is_superuser(request):
            fields += [f for f in self.superuser_only_fields if f not in fields]
        return fields

    def has_add_permission(self, request):
        return is_superuser(request)

    def has_delete_permission(self, request, obj=None):
        return is_superuser(request)


# --------------------------------------------------------------------------------------
# Directory
# --------------------------------------------------------------------------------------


@admin.register(Department)
class DepartmentAdmin(OrgScopedAdmin):
    list_display = ("name", "org", "parent", "manager", "user_count", "updated_at")
    list_select_related = ("org", "parent", "manager")
    list_filter = ("parent",)
    search_fields = ("name", "description")
    autocomplete_fields = ("parent", "manager")
    readonly_fields = ("legacy_id", "created_at", "updated_at")
    fields = ("org", "name", "description", "parent", "manager", "legacy_id", "created_at", "updated_at")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_users=count_subquery(User, "department"))

    @admin.display(description="users", ordering="_users")
    def user_count(self, obj):
        return obj._users


@admin.register(Permission)
class PermissionAdmin(SuperuserWritesMixin, HeldJoinsMixin, admin.ModelAdmin):
    """The global permission catalog: readable by org admins, edited by superusers."""

    list_display = ("codename", "resource", "action", "description", "role_count")
    search_fields = ("codename", "description")
    ordering = ("codename",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_roles=count_subquery(RolePermission, "permission"))

    @admin.display(description="roles", ordering="_roles")
    def role_count(self, obj):
        return obj._roles


@admin.register(Role)
class RoleAdmin(HeldGrantsAdminMixin, CreatedByAdminMixin, OrgScopedAdmin):
    list_display = ("name", "org", "level", "is_system", "parent", "permission_count", "user_count")
    list_select_related = ("org", "parent")
    list_filter = ("is_system",)
    search_fields = ("name", "description")
    autocomplete_fields = ("parent",)
    readonly_fields = ("legacy_id", "created_at", "updated_at", "created_by")
    all_fieldsets = (
        (None, {"fields": ("org", "name", "description", "level", "parent", "is_system")}),
        ("Permissions", {"fields": ("permissions",)}),
        ("Record", {"fields": ("created_by", "legacy_id", "created_at", "updated_at"), "classes": ("collapse",)}),
    )
    # Through RolePermission: a checkbox per permission; rows are written on save.
    through_m2m = {"permissions": forms.CheckboxSelectMultiple}
    grants = {"permissions": _permission_codes, "parent": _role_codes}

    def above_admin(self, request, obj) -> bool:
        return bool(lacking(request.user, obj.effective_permissions()))

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_perms=count_subquery(RolePermission, "role"), _users=count_subquery(UserRole, "role"))
        )

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "permissions":
            kwargs["queryset"] = Permission.objects.order_by("codename")
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        if db_field.name == "permissions" and field is not None:
            field.widget.attrs["class"] = "af-checkbox-columns"
        return field

    @admin.display(description="permissions", ordering="_perms")
    def permission_count(self, obj):
        return obj._perms

    @admin.display(description="users", ordering="_users")
    def user_count(self, obj):
        return obj._users


class GroupMembershipInline(ScopedTabularInline):
    model = GroupMembership
    extra = 1
    autocomplete_fields = ("user",)
    verbose_name = "member"
    verbose_name_plural = "members"


@admin.register(Group)
class GroupAdmin(HeldGrantsAdminMixin, OrgScopedAdmin):
    list_display = ("name", "org", "member_count", "role_names", "updated_at")
    list_select_related = ("org",)
    search_fields = ("name", "description")
    readonly_fields = ("legacy_id", "created_at", "updated_at")
    all_fieldsets = (
        (None, {"fields": ("org", "name", "description", "roles", "legacy_id", "created_at", "updated_at")}),
    )
    through_m2m = {"roles": admin.widgets.FilteredSelectMultiple}
    inlines = (GroupMembershipInline,)
    # A member gets the group's roles: adding members is safe once the group is not above the admin.
    grants = {"roles": _role_codes}

    def above_admin(self, request, obj) -> bool:
        role_ids = GroupRole.objects.filter(group=obj).values_list("role_id", flat=True)
        return bool(lacking(request.user, role_permission_codes(role_ids)))

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_members=count_subquery(GroupMembership, "group"))
            .prefetch_related(Prefetch("roles", queryset=Role.objects.only("id", "name")))
        )

    @admin.display(description="members", ordering="_members")
    def member_count(self, obj):
        return obj._members

    @admin.display(description="roles")
    def role_names(self, obj):
        return ", ".join(sorted(r.name for r in obj.roles.all())) or "—"


# --------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------


class UniqueEmailInOrgMixin:
    """The (org, email) uniqueness lives on a non-form column; check it here."""

    def clean(self):
        cleaned = super().clean()
        email = cleaned.get("email")
        org = cleaned.get("org")
        org_id = getattr(org, "pk", None) or getattr(self.instance, "org_id", None)
        if email and org_id:
            clash = User.all_orgs.filter(org_id=org_id, email_normalized=normalize_email_address(email))
            if self.instance.pk:
                clash = clash.exclude(pk=self.instance.pk)
            if clash.exists():
                self.add_error("email", "A user with this email already exists in this organization.")
        return cleaned


class UserAddForm(UniqueEmailInOrgMixin, SetUnusablePasswordMixin, SetPasswordMixin, forms.ModelForm):
    password1, password2 = SetPasswordMixin.create_password_fields()
    usable_password = SetUnusablePasswordMixin.create_usable_password_field()

    class Meta:
        model = User
        fields = ("email", "org", "first_name", "last_name")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["email"].widget.attrs["autofocus"] = True
        self.fields["password1"].required = False
        self.fields["password2"].required = False

    def clean(self):
        self.validate_passwords()
        return super().clean()

    def _post_clean(self):
        super()._post_clean()
        self.validate_password_for_user(self.instance)

    def save(self, commit=True):
        user = super().save(commit=False)
        user = self.set_password_and_save(user, commit=commit)
        if commit and hasattr(self, "save_m2m"):
            self.save_m2m()
        return user


class UserChangeForm(UniqueEmailInOrgMixin, forms.ModelForm):
    password = ReadOnlyPasswordHashField(
        label="Password",
        help_text="Raw passwords are not stored. Use the button to set a new one.",
    )

    class Meta:
        model = User
        # The admin passes the real field list (from the fieldsets); building every
        # field here, at import time, would query organization-scoped managers.
        fields = ("email", "password")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        permissions = self.fields.get("user_permissions")
        if permissions:
            permissions.queryset = permissions.queryset.select_related("content_type")

    def clean_direct_permissions(self):
        # What effective_permissions reads, and what the grants check compares: a list of strings
        # (a dict's keys would count as permissions, a nested list would break both).
        value = self.cleaned_data.get("direct_permissions")
        if value is not None and not (isinstance(value, list) and all(isinstance(code, str) for code in value)):
            raise forms.ValidationError("Direct permissions are a list of permission strings.")
        return value


class LockedFilter(admin.SimpleListFilter):
    title = "locked"
    parameter_name = "locked"

    def lookups(self, request, model_admin):
        return (("yes", "Locked now"), ("no", "Not locked"))

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(locked_until__gt=now)
        if self.value() == "no":
            return queryset.exclude(locked_until__gt=now)
        return queryset


@admin.register(User)
class UserAdmin(HeldGrantsAdminMixin, OrgScopedAdmin, DjangoUserAdmin):
    form = UserChangeForm
    add_form = UserAddForm
    list_display = ("email", "full_name", "org", "role_names", "status_badge", "mfa_enabled", "is_staff", "last_login")
    list_select_related = ("org", "mfa")
    list_filter = (
        "status",
        LockedFilter,
        "is_staff",
        "is_superuser",
        "auth_provider",
        "mfa__enabled",
        "must_change_password",
        "department",
        "roles",
    )
    search_fields = ("email", "first_name", "last_name", "display_name", "employee_id")
    ordering = ("email",)
    autocomplete_fields = ("department", "manager")
    filter_horizontal = ("groups", "user_permissions")
    through_m2m = {"roles": admin.widgets.FilteredSelectMultiple}
    grants = {"direct_permissions": set, "roles": _role_codes}
    readonly_fields = (
        "last_login",
        "last_active",
        "last_login_ip",
        "password_changed_at",
        "failed_login_attempts",
        "mfa_status",
        "legacy_id",
        "created_at",
        "updated_at",
    )
    all_fieldsets = (
        (None, {"fields": ("email", "password")}),
        (
            "Organization",
            {"fields": ("org", "department", "manager", "job_title", "employee_id", "auth_provider", "external_id")},
        ),
        ("Profile", {"fields": ("first_name", "last_name", "display_name", "phone", "location", "avatar_url", "bio")}),
        ("Access", {"fields": ("status", "roles", "direct_permissions", "has_enduser_access", "has_admin_access")}),
        (
            "Admin console",
            {
                "fields": ("is_staff", "is_superuser", "groups", "user_permissions"),
                "description": "Staff users may sign in here; what they may do comes from these Django permissions.",
            },
        ),
        (
            "Security",
            {
                "fields": (
                    "email_verified",
                    "must_change_password",
                    "locked_until",
                    "failed_login_attempts",
                    "password_changed_at",
                    "mfa_status",
                    "last_login",
                    "last_active",
                    "last_login_ip",
                )
            },
        ),
        ("Record", {"fields": ("legacy_id", "created_at", "updated_at"), "classes": ("collapse",)}),
    )
    fieldsets = ((None, {"fields": ("email", "password")}),)  # all_fieldsets is what is used
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "org", "first_name", "last_name", "usable_password", "password1", "password2"),
            },
        ),
    )
    actions = ("lock_users", "unlock_users", "force_password_reset")
    superuser_only_fields = ("is_superuser", "groups", "user_permissions")

    def get_queryset(self, request):
        return (
            super().get_queryset(request).prefetch_related(Prefetch("roles", queryset=Role.objects.only("id", "name")))
        )

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if is_superuser(request):
            return fieldsets
        result = []
        for title, opts in fieldsets:
            fields = [f for f in opts.get("fields", ()) if f not in self.superuser_only_fields or f == "is_superuser"]
            if fields:
                result.append((title, {**opts, "fields": fields}))
        return result

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not is_superuser(request):
            fields.append("is_superuser")
        return fields

    # -- columns -----------------------------------------------------------------

    @admin.display(description="name", ordering="last_name")
    def full_name(self, obj):
        return obj.get_full_name()

    @admin.display(description="roles")
    def role_names(self, obj):
        return ", ".join(sorted(r.name for r in obj.roles.all())) or "—"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        if obj.is_locked:
            return format_html('<span class="af-badge af-badge-bad" title="until {}">locked</span>', obj.locked_until)
        css = {"active": "af-badge-ok", "pending": "af-badge-warn"}.get(obj.status, "af-badge-bad")
        return format_html('<span class="af-badge {}">{}</span>', css, obj.get_status_display())

    @admin.display(description="MFA", boolean=True)
    def mfa_enabled(self, obj):
        try:
            return obj.mfa.is_active
        except MFASettings.DoesNotExist:
            return False

    @admin.display(description="MFA")
    def mfa_status(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        mfa = MFASettings.objects.filter(user=obj).first()  # this organization's only, as obj.mfa
        if mfa is None:
            return "not set up"
        methods = ", ".join(mfa.methods or []) or "no methods"
        return f"{'active' if mfa.is_active else 'inactive'} ({methods})"

    # -- permissions -------------------------------------------------------------

    def above_admin(self, request, obj) -> bool:
        # An org admin never edits (password included) a user with more privileges
        # than their own, a superuser above all: that would be an escalation path.
        return obj.pk in outranking_ids(request)

    # -- actions -----------------------------------------------------------------

    def _actionable(self, request, queryset):
        return queryset if is_superuser(request) else queryset.exclude(pk__in=outranking_ids(request))

    @admin.action(description="Lock the selected users", permissions=["change"])
    def lock_users(self, request, queryset):
        until = timezone.now() + timedelta(days=365 * 100)
        count = 0
        for user in self._actionable(request, queryset).exclude(pk=request.user.pk):
            user.status = User.Status.LOCKED
            user.locked_until = until
            user.save(update_fields=["status", "locked_until"])
            self.log_change(request, user, "Locked by an administrator.")
            count += 1
        self.message_user(request, f"Locked {count} user(s).", messages.SUCCESS)

    @admin.action(description="Unlock the selected users", permissions=["change"])
    def unlock_users(self, request, queryset):
        count = 0
        for user in self._actionable(request, queryset):
            user.status = User.Status.ACTIVE
            user.locked_until = None
            user.failed_login_attempts = 0
            user.save(update_fields=["status", "locked_until", "failed_login_attempts"])
            self.log_change(request, user, "Unlocked by an administrator.")
            count += 1
        self.message_user(request, f"Unlocked {count} user(s).", messages.SUCCESS)

    @admin.action(description="Force a password reset at next sign-in", permissions=["change"])
    def force_password_reset(self, request, queryset):
        count = 0
        for user in self._actionable(request, queryset):
            user.must_change_password = True
            user.save(update_fields=["must_change_password"])
            self.log_change(request, user, "Password reset forced by an administrator.")
            count += 1
        self.message_user(request, f"{count} user(s) must change their password at next sign-in.", messages.SUCCESS)


# --------------------------------------------------------------------------------------
# Per-user security records
# --------------------------------------------------------------------------------------


@admin.register(MFASettings)
class MFASettingsAdmin(UserCredentialsAdminMixin, SecretFieldsMixin, OrgScopedAdmin):
    list_display = ("user", "org", "enabled", "method_list", "totp_verified", "phone_verified", "last_used")
    list_select_related = ("user", "org")
    list_filter = ("enabled", "totp_verified", "phone_verified")
    search_fields = ("user__email", "phone_number", "recovery_email")
    autocomplete_fields = ("user",)
    readonly_fields = ("backup_codes_left", "backup_codes_generated_at", "last_used", "updated_at")
    fields = (
        "org",
        "user",
        "enabled",
        "methods",
        "totp_secret",
        "totp_verified",
        "phone_number",
        "phone_verified",
        "recovery_email",
        "backup_codes_left",
        "backup_codes_generated_at",
        "last_used",
        "updated_at",
    )

    @admin.display(description="methods")
    def method_list(self, obj):
        return ", ".join(obj.methods or []) or "—"

    @admin.display(description="backup codes left")
    def backup_codes_left(self, obj):
        return len(obj.backup_codes or []) if obj else 0


@admin.register(PasswordHistory)
class PasswordHistoryAdmin(UserCredentialsAdminMixin, ReadOnlyAdminMixin, OrgScopedAdmin):
    list_display = ("user", "org", "position", "algorithm", "created_at")
    list_select_related = ("user", "org")
    search_fields = ("user__email",)
    fields = ("org", "user", "position", "algorithm", "created_at")
    readonly_fields = fields

    @admin.display(description="hash")
    def algorithm(self, obj):
        # The hash itself is not shown, only how it was made.
        return f"{(obj.password_hash or '').split('$', 1)[0] or '?'} ••••••"


@admin.register(UserSession)
class UserSessionAdmin(UserCredentialsAdminMixin, ReadOnlyAdminMixin, OrgScopedAdmin):
    list_display = (
        "user",
        "org",
        "ip_address",
        "agent",
        "created_at",
        "last_seen_at",
        "expires_at",
        "revoked_at",
        "mfa_verified",
    )
    list_select_related = ("user", "org")
    list_filter = ("mfa_verified", "remember_me", ("revoked_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("user__email", "=ip_address")
    ordering = ("-created_at",)
    fields = (
        "org",
        "user",
        "ip_address",
        "user_agent",
        "remember_me",
        "mfa_verified",
        "created_at",
        "last_seen_at",
        "expires_at",
        "revoked_at",
    )
    readonly_fields = fields

    @admin.display(description="user agent")
    def agent(self, obj):
        return truncate(obj.user_agent, 60)
