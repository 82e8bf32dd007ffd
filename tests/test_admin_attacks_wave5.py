"""Attacks of the fifth round on the admin, by another organization's admin with a browser.

What the earlier rounds left: the admin's own code reading past the scoped managers, and the
pages of global tables. A page of A's row that lists rows linked to it (a conversation's
transcript, a user's MFA status) and the edit of a many-to-many with its own through model (a
user's or a group's roles) read ``all_orgs``: a link between organizations planted around the
checks (an import, an old writer) handed B's rows to A's admin, who read them and, by saving,
deleted them. The history page (Django's LogEntry, a global table) named B's users, and a lookup
across a relation of a global table (the permission catalog, Django's groups) answered about B's
roles, grants and users. Each must leave B's rows unread and unchanged, with the same outcome on
every backend (on PostgreSQL row-level security is the second wall). The last test pins what held:
B's key and a key of no row get the same answer on every object URL, the "view on site" shortcut
and every action of every model.
"""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from accounts.models import MFASettings, RolePermission, UserRole
from agentforge_core.tenancy import unscoped
from tests.admin_support import admin_world, form_data, plant_their_message, request_scope

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_org, make_user):
    return admin_world(make_org, make_user)


def _stored(row):
    """The row as the database holds it now (every column), read as system work."""
    with unscoped():
        return type(row).all_orgs.filter(pk=row.pk).values().first()


def test_a_conversations_transcript_never_shows_another_organizations_message(client, world, plant):
    plant_their_message(world, plant, "their-words-XYZZY-21")
    client.force_login(world["orgadmin"])
    page = client.get(reverse("admin:conversations_conversation_change", args=[world["mine"]["conversation"].pk]))
    html = page.content.decode()
    assert "Hi! How can I help?" in html  # A's own messages
    assert "their-words-XYZZY-21" not in html


def test_a_users_mfa_status_never_reads_another_organizations_mfa_settings(client, world, make_user, plant):
    mine, theirs = world["mine"], world["theirs"]
    newcomer = make_user(world["org"], email="newcomer@acme.test")  # no MFA of their own
    plant(MFASettings, theirs["mfasettings"], user_id=newcomer.pk)
    client.force_login(world["orgadmin"])
    html = client.get(reverse("admin:accounts_user_change", args=[newcomer.pk])).content.decode()
    assert "not set up" in html
    assert "active (totp)" not in html
    assert mine["user"].email  # A's member, with MFA, is another page


def test_saving_a_users_roles_leaves_another_organizations_role_links_alone(client, world, plant):
    mine, theirs = world["mine"], world["theirs"]
    their_link = UserRole.all_orgs.get(user=theirs["user"])
    plant(UserRole, their_link, user_id=mine["user"].pk)
    before = _stored(their_link)
    client.force_login(world["orgadmin"])
    url = reverse("admin:accounts_user_change", args=[mine["user"].pk])
    data = form_data(client.get(url))
    assert data["roles"] == [str(mine["role"].pk)]  # B's role is not shown as one of A's user's
    response = client.post(url, {**data, "roles": []})
    assert response.status_code == 302
    assert not UserRole.all_orgs.filter(org=world["org"], user=mine["user"]).exists()  # A's own link went
    assert _stored(their_link) == before  # B's row: not deleted, not changed


@pytest.mark.parametrize("app, model, row", [("agents", "agent", "agent"), ("accounts", "permission", "permission")])
def test_a_rows_history_never_names_another_organizations_user(client, world, make_user, app, model, row):
    # A superuser of B changes A's row (or the global permission catalog), then A's admin does.
    their_root = make_user(
        world["other"], email="root@globex.test", first_name="Gloria", is_staff=True, is_superuser=True
    )
    pk = world["mine"][row].pk
    change = reverse(f"admin:{app}_{model}_change", args=[pk])
    client.force_login(their_root)
    assert client.post(change, {**form_data(client.get(change)), "description": "by B's root"}).status_code == 302
    client.force_login(world["superuser"])
    assert client.post(change, {**form_data(client.get(change)), "description": "by A's root"}).status_code == 302
    # Django's history lists the LogEntry rows (a global table) with their users joined, unscoped:
    # B's superuser was named on SQLite and MariaDB; PostgreSQL's row-level security hid the entry.
    client.force_login(world["orgadmin"])
    response = client.get(reverse(f"admin:{app}_{model}_history", args=[pk]))
    with request_scope(response):
        assert [entry.user_id for entry in response.context["action_list"]] == [world["superuser"].pk]
    html = response.content.decode()
    assert "root@acme.test" in html and "1 entry" in html  # the count does not count B's user's entry
    assert "root@globex.test" not in html and "Gloria" not in html
    if model == "agent":  # a superuser's views of tenant rows run unscoped: every entry
        client.force_login(world["superuser"])
        response = client.get(reverse(f"admin:{app}_{model}_history", args=[pk]))
        assert [entry.user_id for entry in response.context["action_list"]] == [their_root.pk, world["superuser"].pk]


@pytest.mark.parametrize(
    "url, lookup, keys",
    [
        ("admin:accounts_permission_changelist", "roles__id", lambda w: (w["mine"]["role"], w["theirs"]["role"])),
        (
            "admin:accounts_permission_changelist",
            "role_permissions__id",
            lambda w: tuple(RolePermission.all_orgs.get(role=w[side]["role"]) for side in ("mine", "theirs")),
        ),
        ("admin:auth_group_changelist", "user__id", lambda w: (w["mine"]["user"], w["theirs"]["user"])),
    ],
)
def test_a_global_tables_list_is_not_filtered_across_a_relation_into_tenant_rows(
    client, world, make_user, url, lookup, keys
):
    # The permission catalog and Django's groups (admin-console permissions) are global: a lookup
    # across their relations into the roles or users (Django allows any relation one level deep)
    # joined B's rows unscoped, so the list told whether B's role, grant or user of that key
    # exists and what it holds. Refused for both organizations' keys, as a lookup Django does not offer.
    from django.contrib.auth.models import Group as DjangoGroup
    from django.contrib.auth.models import Permission as DjangoPermission

    operators = DjangoGroup.objects.create(name="Operators")
    operators.user_set.add(world["mine"]["user"], world["theirs"]["user"])
    staff = make_user(world["org"], email="staff@acme.test", is_staff=True)  # may see Django's groups too
    staff.user_permissions.add(
        *DjangoPermission.objects.filter(
            codename__in=["view_group", "view_permission"], content_type__app_label__in=["auth", "accounts"]
        )
    )
    client.force_login(staff)
    statuses = [client.get(reverse(url), {lookup: str(row.pk)}).status_code for row in keys(world)]
    assert statuses == [400, 400]
    client.force_login(world["superuser"])  # superusers filter as before
    assert [client.get(reverse(url), {lookup: str(row.pk)}).status_code for row in keys(world)] == [200, 200]


def _answer(response) -> tuple:
    """A response as a visitor compares it: status, redirect and page, less what varies anyway."""
    body = b"".join(response.streaming_content) if response.streaming else response.content  # the CSV export
    page = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", body.decode())
    return response.status_code, response.get("Location"), page


def test_another_organizations_key_gets_the_answer_of_a_key_of_no_row_everywhere(client, world):
    client.force_login(world["orgadmin"])
    tried = 0
    for name, row in world["theirs"].items():
        model_admin = admin.site._registry.get(type(row))
        if model_admin is None or name == "permission":  # the catalog is global
            continue
        opts = row._meta
        base = f"admin:{opts.app_label}_{opts.model_name}"
        no_row = uuid.uuid4() if isinstance(row.pk, uuid.UUID) else 10**9
        content_type = ContentType.objects.get_for_model(row)
        actions = ["delete_selected", *(model_admin.actions or ())]
        attempts = [("get", reverse(f"{base}_{view}", args=["KEY"]), {}) for view in ("change", "history", "delete")]
        attempts += [
            ("post", reverse(f"{base}_change", args=["KEY"]), {"name": "taken"}),
            ("post", reverse(f"{base}_delete", args=["KEY"]), {"post": "yes"}),
            ("get", reverse(f"{base}_change", args=["KEY"]), {"_popup": "1", "_to_field": "id"}),
            ("get", reverse("admin:view_on_site", args=[content_type.pk, "KEY"]), {}),
            *[("post", reverse(f"{base}_changelist"), {"action": a, "_selected_action": "KEY"}) for a in actions],
            *[
                ("post", reverse(f"{base}_changelist"), {"action": a, "_selected_action": "KEY", "post": "yes"})
                for a in actions
            ],
        ]
        for method, url, data in attempts:
            answers = []
            for key in (row.pk, no_row):
                response = getattr(client, method)(
                    url.replace("KEY", str(key)), {k: str(key) if v == "KEY" else v for k, v in data.items()}
                )
                answers.append(_answer(response))
                client.get(reverse("admin:index"))  # the messages the attempt left
            assert answers[0] == answers[1], (name, method, url, data)
            if "/change/" in url or "/history/" in url or "/delete/" in url:
                assert answers[0][0] == 404, (name, url)
            tried += 1
    assert tried > 200
