"""An organization admin grants only what they hold themselves (escalation prevention).

An org admin without ``system:admin`` (as in the ``ranks`` fixture of test_tenancy_attacks) may
not add to a user (themselves included) a direct permission, or a role carrying one, that they
lack; nor add such a permission, parent role or role to a role or group; and a role or group
that already carries more than the admin holds is not theirs to change or delete, as a user who
outranks them is not. Each refusal is a form error on the field (or a 403 for the page) with
nothing saved. Granting what they hold, removing, and a superuser granting anything still work.
"""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from tests.admin_support import admin_world, form_data

pytestmark = pytest.mark.django_db

REFUSED = "You cannot grant what you do not hold yourself: system:admin."


@pytest.fixture
def world(make_org, make_user):
    """Acme's org admin holding agents:read and users:manage (directly) and the Reader role (also
    through the Readers group); roles and a group carrying system:admin; a colleague above."""
    from accounts.models import Group, GroupMembership, GroupRole, Permission, Role, RolePermission, UserRole

    world = admin_world(make_org, make_user, rows=False)
    org, orgadmin = world["org"], world["orgadmin"]
    orgadmin.direct_permissions = ["agents:read", "users:manage"]  # not system:admin
    orgadmin.save(update_fields=["direct_permissions"])
    perms = {
        c: Permission.objects.get_or_create(codename=c)[0] for c in ("agents:read", "users:manage", "system:admin")
    }

    def role(name, *codes, parent=None):
        made = Role.all_orgs.create(org=org, name=name, parent=parent)
        for code in codes:
            RolePermission.all_orgs.create(org=org, role=made, permission=perms[code])
        return made

    def group(name, *roles):
        made = Group.all_orgs.create(org=org, name=name)
        for held in roles:
            GroupRole.all_orgs.create(org=org, group=made, role=held)
        return made

    world["perms"] = perms
    world["reader"] = role("Reader", "agents:read")
    world["root"] = role("Root", "system:admin")
    world["heir"] = role("Heir", parent=world["root"])  # system:admin through its parent only
    world["readers"] = group("Readers", world["reader"])
    world["admins"] = group("Admins", world["root"])
    UserRole.all_orgs.create(org=org, user=orgadmin, role=world["reader"])
    GroupMembership.all_orgs.create(org=org, group=world["readers"], user=orgadmin)
    world["af_admin"] = make_user(org, email="sysadmin@acme.test", direct_permissions=["system:admin"])
    world["member"] = make_user(org, email="plain@acme.test", direct_permissions=["agents:read"])
    return world


def _url(model, obj=None):
    if obj is None:
        return reverse(f"admin:accounts_{model}_add")
    return reverse(f"admin:accounts_{model}_change", args=[obj.pk])


def _post(client, url, **changes):
    """Re-submit the page at ``url`` as rendered, with ``changes``."""
    data = form_data(client.get(url))
    data.update(changes)
    return client.post(url, data)


def _errors(response) -> dict:
    assert response.status_code == 200, response.status_code
    return dict(response.context["adminform"].form.errors)


def _add_member(client, url, user, **changes):
    data = form_data(client.get(url))
    total = int(data["memberships-TOTAL_FORMS"])
    data[f"memberships-{total - 1}-user"] = str(user.pk)  # the blank extra row
    data.update(changes)
    return client.post(url, data)


def _user(world, name):
    from accounts.models import User

    return User.all_orgs.get(pk=world[name].pk)


def _role_ids(user) -> set:
    from accounts.models import UserRole

    return set(UserRole.all_orgs.filter(user=user).values_list("role_id", flat=True))


def _codes(role) -> set:
    from accounts.models import RolePermission

    return set(RolePermission.all_orgs.filter(role=role).values_list("permission__codename", flat=True))


def _group_role_ids(group) -> set:
    from accounts.models import GroupRole

    return set(GroupRole.all_orgs.filter(group=group).values_list("role_id", flat=True))


# --- refused: granting what the admin lacks ------------------------------------------------------


def test_an_org_admin_cannot_grant_themselves_system_admin_directly(client, world):
    from accounts.privileges import outranking_user_ids

    client.force_login(world["orgadmin"])
    url = _url("user", world["orgadmin"])
    response = _post(client, url, direct_permissions=json.dumps(["agents:read", "users:manage", "system:admin"]))
    assert _errors(response) == {"direct_permissions": [REFUSED]}
    assert _user(world, "orgadmin").direct_permissions == ["agents:read", "users:manage"]
    # The colleague above still outranks them: their page stays closed.
    assert world["af_admin"].pk in outranking_user_ids(_user(world, "orgadmin"))
    assert client.post(_url("user", world["af_admin"]), {"direct_permissions": "[]"}).status_code == 403


def test_an_org_admin_cannot_grant_system_admin_directly_to_another_user(client, world):
    client.force_login(world["orgadmin"])
    response = _post(client, _url("user", world["member"]), direct_permissions='["agents:read", "system:admin"]')
    assert _errors(response) == {"direct_permissions": [REFUSED]}
    assert _user(world, "member").direct_permissions == ["agents:read"]


@pytest.mark.parametrize("value", ['{"system:admin": true}', '[["system:admin"]]'])
def test_direct_permissions_are_a_list_of_strings(client, world, value):
    # A dict's keys would count as permissions (effective_permissions takes set() of the value).
    client.force_login(world["orgadmin"])
    response = _post(client, _url("user", world["orgadmin"]), direct_permissions=value)
    assert _errors(response) == {"direct_permissions": ["Direct permissions are a list of permission strings."]}
    assert _user(world, "orgadmin").direct_permissions == ["agents:read", "users:manage"]


@pytest.mark.parametrize("role", ["root", "heir"])
def test_an_org_admin_cannot_give_themselves_a_role_carrying_system_admin(client, world, role):
    client.force_login(world["orgadmin"])
    roles = [str(world["reader"].pk), str(world[role].pk)]
    response = _post(client, _url("user", world["orgadmin"]), roles=roles)
    assert _errors(response) == {"roles": [REFUSED]}
    assert _role_ids(world["orgadmin"]) == {world["reader"].pk}


def test_an_org_admin_cannot_join_a_group_carrying_system_admin(client, world):
    from accounts.models import GroupMembership

    client.force_login(world["orgadmin"])
    # The group carries more than the admin holds: its page is read-only, as an outranking user's.
    page = client.get(_url("group", world["admins"]))
    assert page.status_code == 200 and page.context["has_change_permission"] is False
    response = _add_member(client, _url("group", world["admins"]), world["orgadmin"])
    assert response.status_code == 403
    assert not GroupMembership.all_orgs.filter(group=world["admins"]).exists()


def test_an_org_admin_cannot_make_a_group_carrying_system_admin_and_join_it(client, world):
    from accounts.models import Group

    client.force_login(world["orgadmin"])
    url = _url("group")
    response = _add_member(client, url, world["orgadmin"], name="Mine", roles=[str(world["root"].pk)])
    assert _errors(response) == {"roles": [REFUSED]}
    assert not Group.all_orgs.filter(name="Mine").exists()


def test_an_org_admin_cannot_add_system_admin_to_a_role_they_hold(client, world):
    client.force_login(world["orgadmin"])
    permissions = [str(world["perms"]["agents:read"].pk), str(world["perms"]["system:admin"].pk)]
    response = _post(client, _url("role", world["reader"]), permissions=permissions)
    assert _errors(response) == {"permissions": [REFUSED]}
    assert _codes(world["reader"]) == {"agents:read"}


def test_an_org_admin_cannot_give_a_role_they_hold_a_parent_carrying_system_admin(client, world):
    from accounts.models import Role

    client.force_login(world["orgadmin"])
    response = _post(client, _url("role", world["reader"]), parent=str(world["root"].pk))
    assert _errors(response) == {"parent": [REFUSED]}
    assert Role.all_orgs.get(pk=world["reader"].pk).parent_id is None


@pytest.mark.parametrize("role", ["root", "heir"])
def test_an_org_admin_cannot_add_a_role_carrying_system_admin_to_a_group_they_are_in(client, world, role):
    client.force_login(world["orgadmin"])
    roles = [str(world["reader"].pk), str(world[role].pk)]
    response = _post(client, _url("group", world["readers"]), roles=roles)
    assert _errors(response) == {"roles": [REFUSED]}
    assert _group_role_ids(world["readers"]) == {world["reader"].pk}


@pytest.mark.parametrize(("model", "name"), [("role", "root"), ("role", "heir"), ("group", "admins")])
def test_an_org_admin_cannot_change_or_delete_a_role_or_group_carrying_more(client, world, model, name):
    client.force_login(world["orgadmin"])
    obj = world[name]
    page = client.get(_url(model, obj))
    assert page.status_code == 200 and page.context["has_change_permission"] is False
    assert client.post(_url(model, obj), {"name": "renamed"}).status_code == 403
    delete = reverse(f"admin:accounts_{model}_delete", args=[obj.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert type(obj).all_orgs.get(pk=obj.pk).name == obj.name


# --- still allowed ------------------------------------------------------------------------------


def test_an_org_admin_grants_what_they_hold(client, world):
    from accounts.models import GroupMembership

    client.force_login(world["orgadmin"])
    member = world["member"]
    response = _post(
        client, _url("user", member), direct_permissions='["agents:read", "users:manage"]', roles=[world["reader"].pk]
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert _user(world, "member").direct_permissions == ["agents:read", "users:manage"]
    assert _role_ids(member) == {world["reader"].pk}
    permissions = [str(world["perms"]["agents:read"].pk), str(world["perms"]["users:manage"].pk)]
    assert _post(client, _url("role", world["reader"]), permissions=permissions).status_code == 302
    assert _codes(world["reader"]) == {"agents:read", "users:manage"}
    assert _add_member(client, _url("group", world["readers"]), member).status_code == 302
    assert GroupMembership.all_orgs.filter(group=world["readers"], user=member).exists()


def test_an_org_admin_removes_grants(client, world):
    client.force_login(world["orgadmin"])
    response = _post(client, _url("user", world["orgadmin"]), direct_permissions='["agents:read"]', roles=[])
    assert response.status_code == 302, response.content.decode()[:2000]
    assert _user(world, "orgadmin").direct_permissions == ["agents:read"]
    assert _role_ids(world["orgadmin"]) == set()
    assert _post(client, _url("user", world["member"]), direct_permissions="[]").status_code == 302
    assert _user(world, "member").direct_permissions == []
    assert _post(client, _url("role", world["reader"]), permissions=[]).status_code == 302
    assert _codes(world["reader"]) == set()
    assert _post(client, _url("group", world["readers"]), roles=[]).status_code == 302
    assert _group_role_ids(world["readers"]) == set()


def test_an_org_admin_holding_system_admin_grants_anything(client, world):
    orgadmin = world["orgadmin"]
    orgadmin.direct_permissions = ["system:admin"]
    orgadmin.save(update_fields=["direct_permissions"])
    client.force_login(orgadmin)
    response = _post(client, _url("user", world["member"]), roles=[world["root"].pk])
    assert response.status_code == 302, response.content.decode()[:2000]
    assert _role_ids(world["member"]) == {world["root"].pk}
    assert _post(client, _url("role", world["root"]), name="Root admins").status_code == 302


def test_a_superuser_grants_anything(client, world):
    client.force_login(world["superuser"])
    orgadmin = world["orgadmin"]
    response = _post(
        client,
        _url("user", orgadmin),
        direct_permissions='["system:admin"]',
        roles=[world["reader"].pk, world["root"].pk],
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert _user(world, "orgadmin").direct_permissions == ["system:admin"]
    assert _role_ids(orgadmin) == {world["reader"].pk, world["root"].pk}
    permissions = [str(world["perms"]["agents:read"].pk), str(world["perms"]["system:admin"].pk)]
    assert _post(client, _url("role", world["reader"]), permissions=permissions).status_code == 302
    assert _codes(world["reader"]) == {"agents:read", "system:admin"}
    assert _post(client, _url("group", world["readers"]), roles=[world["root"].pk]).status_code == 302
    assert _group_role_ids(world["readers"]) == {world["root"].pk}


# --- Django's own groups (admin-console permissions) ---------------------------------------------


@pytest.fixture
def operators(world, make_user):
    """A staff user who may manage Django's groups and view users, member of the Operators group
    (which grants the group permissions); the Deleters group carries one they lack."""
    from django.contrib.auth.models import Group as DjangoGroup
    from django.contrib.auth.models import Permission as DjangoPermission

    def perms(*names):
        return [DjangoPermission.objects.get(content_type__app_label=app, codename=code) for app, code in names]

    staff = make_user(world["org"], email="operator@acme.test", is_staff=True)
    operators = DjangoGroup.objects.create(name="Operators")
    operators.permissions.set(perms(("auth", "view_group"), ("auth", "change_group"), ("accounts", "view_user")))
    staff.groups.add(operators)
    deleters = DjangoGroup.objects.create(name="Deleters")
    deleters.permissions.set(perms(("accounts", "delete_user")))
    return {"staff": staff, "operators": operators, "deleters": deleters, "perms": perms}


def _django_group_url(group):
    return reverse("admin:auth_group_change", args=[group.pk])


def _django_codes(group) -> set:
    return set(group.permissions.values_list("codename", flat=True))


def test_a_staff_user_cannot_add_a_django_permission_they_lack_to_their_own_group(client, operators):
    client.force_login(operators["staff"])
    group = operators["operators"]
    (delete_user,) = operators["perms"](("accounts", "delete_user"))
    wanted = [str(p.pk) for p in group.permissions.all()] + [str(delete_user.pk)]
    response = _post(client, _django_group_url(group), permissions=wanted)
    assert _errors(response) == {
        "permissions": ["You cannot grant what you do not hold yourself: accounts.delete_user."]
    }
    assert _django_codes(group) == {"view_group", "change_group", "view_user"}


def test_a_staff_user_may_remove_what_their_group_grants_and_re_add_it(client, operators):
    client.force_login(operators["staff"])
    group = operators["operators"]
    keep = [str(p.pk) for p in group.permissions.exclude(codename="view_user")]
    assert _post(client, _django_group_url(group), permissions=keep).status_code == 302
    assert _django_codes(group) == {"view_group", "change_group"}
    # view_user is no longer theirs through the group: adding it back is granting what they lack.
    (view_user,) = operators["perms"](("accounts", "view_user"))
    response = _post(client, _django_group_url(group), permissions=[*keep, str(view_user.pk)])
    assert _errors(response) == {"permissions": ["You cannot grant what you do not hold yourself: accounts.view_user."]}


def test_a_django_group_carrying_more_is_read_only_for_a_staff_user(client, operators):
    client.force_login(operators["staff"])
    deleters = operators["deleters"]
    url = _django_group_url(deleters)
    assert client.post(url, {"name": "Deleters", "permissions": []}).status_code == 403
    assert client.post(reverse("admin:auth_group_delete", args=[deleters.pk]), {"post": "yes"}).status_code == 403
    assert _django_codes(deleters) == {"delete_user"}


def test_a_superuser_grants_any_django_permission(client, world, operators):
    client.force_login(world["superuser"])
    group = operators["operators"]
    (delete_user,) = operators["perms"](("accounts", "delete_user"))
    wanted = [str(p.pk) for p in group.permissions.all()] + [str(delete_user.pk)]
    assert _post(client, _django_group_url(group), permissions=wanted).status_code == 302
    assert "delete_user" in _django_codes(group)
