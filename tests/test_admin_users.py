"""Users, roles and groups in the admin: forms, actions, through-table choices, admin login lockout."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.admin_support import admin_world, form_data, populate, request_scope

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_org, make_user):
    world = admin_world(make_org, make_user, rows=False)
    org = world["org"]
    world["mine"] = populate(org, make_user(org, email="member@acme.test", first_name="Mem", last_name="Ber"))
    return world


def test_user_list_columns_filters_and_search(client, world):
    client.force_login(world["superuser"])
    url = reverse("admin:accounts_user_changelist")
    response = client.get(url)
    html = response.content.decode()
    for header in ("Organization", "Roles", "Status", "MFA", "Last login"):
        assert header.lower() in html.lower(), header
    assert "Editor" in html  # the member's role
    for filter_title in ("By status", "By locked", "By auth provider", "By organization"):
        assert filter_title.lower() in html.lower(), filter_title
    with request_scope(response):
        assert len(response.context["cl"].result_list) >= 3
    for params in ({"q": "Ber"}, {"mfa__enabled__exact": "1"}):
        response = client.get(url, params)
        with request_scope(response):
            assert [u.email for u in response.context["cl"].result_list] == ["member@acme.test"], params


def test_add_user_with_email_org_and_password(client, world):
    from accounts.models import User

    client.force_login(world["superuser"])
    url = reverse("admin:accounts_user_add")
    page = client.get(url)
    fields = page.context["adminform"].form.fields
    assert {"email", "org", "password1", "password2"} <= set(fields)
    response = client.post(
        url,
        {
            "email": "New.Person@Globex.test",
            "org": str(world["other"].pk),
            "first_name": "New",
            "last_name": "Person",
            "usable_password": "true",
            "password1": "a-Long-and-unusual-passphrase-93",
            "password2": "a-Long-and-unusual-passphrase-93",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    user = User.all_orgs.get(email_normalized="new.person@globex.test")
    assert user.org_id == world["other"].pk
    assert user.check_password("a-Long-and-unusual-passphrase-93")


def test_add_user_rejects_duplicate_email_in_org(client, world):
    client.force_login(world["superuser"])
    response = client.post(
        reverse("admin:accounts_user_add"),
        {"email": "MEMBER@acme.test", "org": str(world["org"].pk), "usable_password": "false"},
    )
    assert response.status_code == 200
    assert "already exists in this organization" in response.content.decode()


def test_same_email_in_another_org_is_fine(client, world):
    from accounts.models import User

    client.force_login(world["superuser"])
    response = client.post(
        reverse("admin:accounts_user_add"),
        {"email": "member@acme.test", "org": str(world["other"].pk), "usable_password": "false"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert User.all_orgs.filter(email_normalized="member@acme.test").count() == 2


def test_org_admin_adds_user_into_own_org(client, world):
    from accounts.models import User

    client.force_login(world["orgadmin"])
    page = client.get(reverse("admin:accounts_user_add"))
    assert "org" not in page.context["adminform"].form.fields
    response = client.post(reverse("admin:accounts_user_add"), {"email": "hire@acme.test", "usable_password": "false"})
    assert response.status_code == 302, response.content.decode()[:3000]
    assert User.all_orgs.get(email_normalized="hire@acme.test").org_id == world["org"].pk


def test_change_form_shows_hash_read_only(client, world):
    client.force_login(world["superuser"])
    member = world["mine"]["user"]
    member.set_password("x-unusual-passphrase-71")
    member.save()
    html = client.get(reverse("admin:accounts_user_change", args=[member.pk])).content.decode()
    assert "../password/" in html
    assert member.password not in html  # the hash summary is shown, not the hash
    assert 'name="password"' not in html


def _run_action(client, action, users):
    return client.post(
        reverse("admin:accounts_user_changelist"),
        {"action": action, "index": "0", "_selected_action": [str(u.pk) for u in users]},
    )


def test_lock_unlock_and_force_reset_actions(client, world):
    from accounts.models import User

    client.force_login(world["orgadmin"])
    member = world["mine"]["user"]
    assert _run_action(client, "lock_users", [member]).status_code == 302
    member = User.all_orgs.get(pk=member.pk)
    assert member.is_locked and member.status == User.Status.LOCKED
    assert _run_action(client, "unlock_users", [member]).status_code == 302
    member = User.all_orgs.get(pk=member.pk)
    assert not member.is_locked and member.status == User.Status.ACTIVE and member.failed_login_attempts == 0
    assert _run_action(client, "force_password_reset", [member]).status_code == 302
    assert User.all_orgs.get(pk=member.pk).must_change_password is True


def test_org_admin_actions_skip_superusers(client, world):
    from accounts.models import User

    client.force_login(world["orgadmin"])
    _run_action(client, "lock_users", [world["superuser"]])
    assert not User.all_orgs.get(pk=world["superuser"].pk).is_locked


def test_role_permissions_are_a_checkbox_list_saved_through_role_permissions(client, world):
    from accounts.models import Permission, RolePermission

    extra = Permission.objects.create(codename="tools:execute")
    client.force_login(world["orgadmin"])
    role = world["mine"]["role"]
    url = reverse("admin:accounts_role_change", args=[role.pk])
    page = client.get(url)
    html = page.content.decode()
    assert 'type="checkbox" name="permissions"' in html
    data = form_data(page)
    assert data["permissions"] == [str(world["mine"]["permission"].pk)]
    data["permissions"] = [str(extra.pk)]
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    rows = list(RolePermission.all_orgs.filter(role=role).values_list("permission__codename", "org_id"))
    assert rows == [("tools:execute", world["org"].pk)]


def test_superuser_sets_roles_of_another_orgs_user(client, world, make_user):
    from accounts.models import Role, UserRole

    client.force_login(world["superuser"])
    other_user = make_user(world["other"], email="someone@globex.test")
    other_role = Role.all_orgs.create(org=world["other"], name="Globex viewer")
    url = reverse("admin:accounts_user_change", args=[other_user.pk])
    data = form_data(client.get(url))
    data["roles"] = [str(other_role.pk)]
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert list(UserRole.all_orgs.filter(user=other_user).values_list("role_id", "org_id")) == [
        (other_role.pk, world["other"].pk)
    ]


def test_group_members_inline_and_roles(client, world):
    from accounts.models import GroupMembership, GroupRole

    client.force_login(world["orgadmin"])
    group = world["mine"]["group"]
    url = reverse("admin:accounts_group_change", args=[group.pk])
    data = form_data(client.get(url))
    data["roles"] = [str(world["mine"]["role"].pk)]
    prefix = "memberships"
    total = int(data[f"{prefix}-TOTAL_FORMS"])
    data[f"{prefix}-{total - 1}-user"] = str(world["orgadmin"].pk)  # the blank extra row
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert set(GroupMembership.all_orgs.filter(group=group).values_list("user__email", flat=True)) == {
        "member@acme.test",
        "admin@acme.test",
    }
    assert GroupMembership.all_orgs.filter(group=group, org=world["org"]).count() == 2
    assert GroupRole.all_orgs.filter(group=group, role=world["mine"]["role"]).exists()


def test_admin_login_honours_lockout(client, world, make_user, settings):
    from accounts.models import User

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The lockout alone: the sign-in throttle would stop one address after 3 (test_signin_throttle).
    settings.SIGNIN_THROTTLE_ACCOUNT_FAILURES = 0
    staff = make_user(world["org"], email="staffer@acme.test", password="Right-passphrase-55", is_staff=True)
    url = reverse("admin:login")
    assert client.post(url, {"username": "staffer@acme.test", "password": "Right-passphrase-55"}).status_code == 302
    client.logout()
    for _ in range(5):
        response = client.post(url, {"username": "staffer@acme.test", "password": "wrong"})
        assert response.status_code == 200
    assert User.all_orgs.get(pk=staff.pk).is_locked
    response = client.post(url, {"username": "staffer@acme.test", "password": "Right-passphrase-55"})
    assert response.status_code == 200  # the right password no longer opens the admin
    assert "_auth_user_id" not in client.session
