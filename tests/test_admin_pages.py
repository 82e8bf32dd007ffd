"""Every registered model's admin pages render, for a superuser and for an organization admin."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.admin_support import ORG_ADMIN_APPS, admin_world, request_scope

pytestmark = pytest.mark.django_db

SUPERUSER_ONLY = {"settings_app.SystemSetting", "security.AuditChainHead"}
# Written by the application alone: nobody adds them in the admin, not even a superuser.
READ_ONLY = {
    "accounts.PasswordHistory",
    "accounts.UserSession",
    "agents.AgentVersion",
    "knowledge.VectorSet",
    "security.AuditLog",
    "security.SecurityEvent",
    "security.AuditChainHead",
    "legacy.LegacyRecord",
}
AGENTFORGE_MODELS = [m for m in admin.site._registry if m._meta.app_label in ORG_ADMIN_APPS]


def _url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def world(make_org, make_user):
    return admin_world(make_org, make_user)


def test_every_agentforge_model_is_registered():
    from django.apps import apps

    through = {"RolePermission", "UserRole", "GroupMembership", "GroupRole", "AgentTool"}  # edited inline
    through.add("HashedSession")  # cookie sessions: never shown (their data is the signed-in state)
    missing = [
        m.__name__
        for app in ORG_ADMIN_APPS
        for m in apps.get_app_config(app).get_models()
        if m not in admin.site._registry and m.__name__ not in through
    ]
    assert missing == []


def test_site_header(client, world):
    client.force_login(world["superuser"])
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    assert "AgentForge DB" in response.content.decode()


@pytest.mark.parametrize("model", AGENTFORGE_MODELS, ids=lambda m: m._meta.label)
def test_superuser_pages_render(client, world, model):
    client.force_login(world["superuser"])
    response = client.get(_url(model, "changelist"))
    assert response.status_code == 200, response.content[:2000]
    # Both organizations' rows are listed for a superuser, with an organization filter.
    key = model._meta.model_name
    if key in world["mine"] and hasattr(model, "all_orgs"):
        assert response.context["cl"].result_count >= 2
        assert "organization" in response.content.decode().lower()
    for row_key in ("mine", "theirs"):
        obj = world[row_key].get(key)
        if obj is None:
            continue
        response = client.get(_url(model, "change", obj.pk))
        assert response.status_code == 200, response.content[:2000]
    response = client.get(_url(model, "add"))
    assert response.status_code == (403 if model._meta.label in READ_ONLY else 200)


@pytest.mark.parametrize("model", AGENTFORGE_MODELS, ids=lambda m: m._meta.label)
def test_org_admin_pages_render_and_hide_other_orgs(client, world, model):
    client.force_login(world["orgadmin"])
    key = model._meta.model_name
    response = client.get(_url(model, "changelist"))
    if model._meta.label in SUPERUSER_ONLY:
        assert response.status_code == 403
        return
    assert response.status_code == 200, response.content[:2000]
    with request_scope(response):
        listed = {str(o.pk) for o in response.context["cl"].result_list}
    theirs = world["theirs"].get(key)
    if theirs is not None and not isinstance(theirs, type(world["mine"]["permission"])):
        assert str(theirs.pk) not in listed
        for view in ("change", "delete", "history"):
            assert client.get(_url(model, view, theirs.pk)).status_code in (403, 404)
    mine = world["mine"].get(key)
    if mine is not None:
        assert str(mine.pk) in listed or model._meta.label == "accounts.Organization"
        assert client.get(_url(model, "change", mine.pk)).status_code == 200
