"""Who outranks whom: nobody manages the credentials of a user with more privileges.

A user's credentials are their password, MFA settings, API keys and login sessions. An
organization admin who could set them for a more privileged user would become that
user (an API key authenticates as its user; an MFA secret of the admin's choosing lets
the admin pass the second factor). ``target`` outranks ``actor`` when it is a superuser
and ``actor`` is not, or when it holds a permission ``actor`` lacks: a Django
permission (what the admin console allows) or an AgentForge permission (what the
application allows: direct permissions, roles with their ancestors, group roles).
Superusers outrank nobody's reach; a user never outranks themself.
"""

from __future__ import annotations

from django.db.models import Q

from accounts.models import GroupRole, User, UserRole
from accounts.models.directory import permission_codes_by_role


def _django_permissions(user) -> set[str]:
    return set(user.get_all_permissions()) if user.is_active else set()


def _covers(held: set, wanted: set) -> bool:
    # AgentForge's "system:admin" grants every permission (User.has_agentforge_permission).
    return SYSTEM_ADMIN in held or wanted <= held


SYSTEM_ADMIN = "system:admin"


def outranks(target, actor) -> bool:
    """Whether ``target`` has privileges ``actor`` lacks."""
    if actor.is_superuser or target.pk == actor.pk:
        return False
    if target.is_superuser:
        return True
    if not _django_permissions(target) <= _django_permissions(actor):
        return True
    return not _covers(actor.effective_permissions(), target.effective_permissions())


def lacking(actor, codes) -> set:
    """The AgentForge permissions among ``codes`` that ``actor`` does not hold, hence may not grant
    (none for a superuser, or a holder of system:admin)."""
    codes = set(codes)
    if actor.is_superuser or not codes:
        return set()
    held = actor.effective_permissions()
    return set() if _covers(held, codes) else codes - held


def outranking_user_ids(actor) -> set:
    """The users of ``actor``'s organization who outrank ``actor`` (none for a superuser).

    Computed for the whole organization with a handful of queries, however many roles and
    users: the roles' permissions, then every user's direct permissions, roles and group roles.
    """
    if actor.is_superuser:
        return set()
    users = User.all_orgs.filter(org_id=actor.org_id).exclude(pk=actor.pk)
    found = set(users.filter(is_superuser=True).values_list("pk", flat=True))
    mine = actor.effective_permissions()
    role_codes = permission_codes_by_role(actor.org_id)
    codes: dict = {pk: set(direct or []) for pk, direct in users.values_list("pk", "direct_permissions")}
    links = list(UserRole.all_orgs.filter(org_id=actor.org_id).values_list("user_id", "role_id"))
    links += GroupRole.all_orgs.filter(org_id=actor.org_id).values_list("group__memberships__user_id", "role_id")
    for user_id, role_id in links:
        if user_id in codes:
            codes[user_id] |= role_codes.get(role_id, set())
    found |= {pk for pk, held in codes.items() if not _covers(mine, held)}
    admin_perms = _django_permissions(actor)
    holders = users.filter(Q(user_permissions__isnull=False) | Q(groups__isnull=False)).exclude(pk__in=found)
    for holder in holders.distinct():
        if not _django_permissions(holder) <= admin_perms:
            found.add(holder.pk)
    return found
