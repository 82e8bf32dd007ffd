"""Departments, groups, roles and the permission catalog."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from agentforge_core.models import (
    LegacyRecordModel,
    OrgOwnedModel,
    TimestampedModel,
    WriteNotifyingQuerySet,
    held_to_active_org,
    org_foreign_key,
    org_index,
)


class Department(LegacyRecordModel, OrgOwnedModel, TimestampedModel):
    org = org_foreign_key("departments")
    name = models.CharField(max_length=255)
    description = models.TextField(null=True, blank=True)
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children")
    manager = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="managed_departments"
    )

    class Meta:
        db_table = "departments"
        ordering = ["name"]
        indexes = [org_index("departments", "name")]

    def __str__(self):
        return self.name


class Permission(models.Model):
    """A permission string (``resource:action``) as used by roles; a global catalog.

    The vocabulary changed several times in the JSON era, so any string is accepted.
    """

    codename = models.CharField(max_length=150, unique=True)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = models.Manager.from_queryset(WriteNotifyingQuerySet)()

    class Meta:
        db_table = "permissions"
        ordering = ["codename"]
        verbose_name = "AgentForge permission"

    def __str__(self):
        return self.codename

    @property
    def resource(self) -> str:
        return self.codename.partition(":")[0]

    @property
    def action(self) -> str:
        return self.codename.partition(":")[2]


class Role(LegacyRecordModel, OrgOwnedModel, TimestampedModel):
    org = org_foreign_key("roles")
    name = models.CharField(max_length=255)
    description = models.TextField(null=True, blank=True)
    permissions = models.ManyToManyField(Permission, through="RolePermission", related_name="roles", blank=True)
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children")
    level = models.IntegerField(default=100, help_text="Lower is more privileged (0 = super admin).")
    is_system = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        db_table = "roles"
        ordering = ["level", "name"]
        indexes = [org_index("roles", "level")]

    def __str__(self):
        return self.name

    def effective_permissions(self) -> set[str]:
        """This role's permission strings and those of every ancestor role."""
        return role_permission_codes([self.pk])


def role_permission_codes(role_ids) -> set[str]:
    """The permission strings of these roles and of all their ancestors.

    One query per level of the role tree, not per role: a permission check for a user
    with twenty roles costs what it costs with two (a cycle of parents ends the walk).
    """
    # Held to the active organization: a role keyed to another organization's row reads none of its grants.
    seen: set = set()
    level = set(role_ids)
    while level:
        seen |= level
        parents = held_to_active_org(Role.all_orgs.filter(pk__in=level, parent__isnull=False))
        level = set(parents.values_list("parent_id", flat=True)) - seen
    if not seen:
        return set()
    grants = held_to_active_org(RolePermission.all_orgs.filter(role_id__in=seen))
    return set(grants.values_list("permission__codename", flat=True))


def permission_codes_by_role(org_id) -> dict:
    """Every role of the organization → its permission strings and its ancestors', in two
    queries however many roles there are (what :func:`role_permission_codes` gives one role)."""
    parents = dict(Role.all_orgs.filter(org_id=org_id).values_list("pk", "parent_id"))
    own: dict = {}
    grants = RolePermission.all_orgs.filter(org_id=org_id).values_list("role_id", "permission__codename")
    for role_id, code in grants:
        own.setdefault(role_id, set()).add(code)
    by_role = {}
    for pk in parents:
        codes, seen, role = set(), set(), pk
        while role is not None and role not in seen:  # a cycle of parents ends the walk
            seen.add(role)
            codes |= own.get(role, set())
            role = parents.get(role)
        by_role[pk] = codes
    return by_role


class RolePermission(OrgOwnedModel):
    org = org_foreign_key("+")
    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="role_permissions", db_index=False)
    permission = models.ForeignKey(Permission, on_delete=models.CASCADE, related_name="role_permissions")

    class Meta:
        db_table = "role_permissions"
        constraints = [models.UniqueConstraint(fields=["role", "permission"], name="role_permissions_uniq")]
        indexes = [org_index("role_permissions", "role")]

    def save(self, *args, **kwargs):
        if self.org_id is None and self.role_id:
            self.org_id = Role.all_orgs.filter(pk=self.role_id).values_list("org_id", flat=True).first()
        super().save(*args, **kwargs)


class Group(LegacyRecordModel, OrgOwnedModel, TimestampedModel):
    """An AgentForge user group (not django.contrib.auth's Group)."""

    org = org_foreign_key("user_groups")
    name = models.CharField(max_length=255)
    description = models.TextField(null=True, blank=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="GroupMembership", related_name="member_groups", blank=True
    )
    roles = models.ManyToManyField(Role, through="GroupRole", related_name="groups", blank=True)

    class Meta:
        db_table = "groups"
        ordering = ["name"]
        indexes = [org_index("groups", "name")]

    def __str__(self):
        return self.name


class GroupMembership(OrgOwnedModel):
    """Membership, the union of users[].group_ids and groups[].user_ids/member_ids."""

    org = org_foreign_key("+")
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="memberships", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="group_memberships")

    class Meta:
        db_table = "group_members"
        constraints = [models.UniqueConstraint(fields=["group", "user"], name="group_members_uniq")]
        indexes = [org_index("group_members", "group")]


class GroupRole(OrgOwnedModel):
    """Roles a group's members inherit (legacy ``groups[].role_ids``)."""

    org = org_foreign_key("+")
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="group_roles", db_index=False)
    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="group_roles")

    class Meta:
        db_table = "group_roles"
        constraints = [models.UniqueConstraint(fields=["group", "role"], name="group_roles_uniq")]
        indexes = [org_index("group_roles", "group")]
