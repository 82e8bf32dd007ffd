"""Secrets in the admin: never in the HTML, write-only in forms, blank keeps, clear empties."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission as DjangoPermission
from django.urls import reverse

from tests.admin_support import SECRET_MARKERS, form_data, grant_all_model_permissions, populate

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_org, make_user):
    org = make_org("Acme")
    superuser = make_user(org, email="root@acme.test", is_staff=True, is_superuser=True)
    rows = populate(org, make_user(org, email="member@acme.test"))
    return {"org": org, "superuser": superuser, "rows": rows}


SECRET_PAGES = [
    ("accounts", "organization", "org"),
    ("accounts", "mfasettings", "mfasettings"),
    ("agents", "tool", "tool"),
    ("security", "oauthconfig", "oauthconfig"),
    ("security", "ldapconfig", "ldapconfig"),
    ("settings_app", "orgsetting", "orgsetting"),
]


def _assert_no_secret(html: str):
    for name, secret in SECRET_MARKERS.items():
        assert secret not in html, f"{name} secret leaked into the page"


@pytest.mark.parametrize("app,model,key", SECRET_PAGES)
def test_secret_never_in_html_for_superuser(client, world, app, model, key):
    client.force_login(world["superuser"])
    obj = world["rows"][key]
    for url in (
        reverse(f"admin:{app}_{model}_changelist"),
        reverse(f"admin:{app}_{model}_change", args=[obj.pk]),
        reverse(f"admin:{app}_{model}_history", args=[obj.pk]),
        reverse(f"admin:{app}_{model}_delete", args=[obj.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        _assert_no_secret(html)
    # The change page says the secret is set, without showing it.
    assert "•••••• (set" in client.get(reverse(f"admin:{app}_{model}_change", args=[obj.pk])).content.decode()


@pytest.mark.parametrize("app,model,key", SECRET_PAGES)
def test_secret_masked_on_view_only_page(client, world, make_user, app, model, key):
    # An AgentForge admin of the organization: the member whose MFA it views does not outrank it.
    viewer = make_user(world["org"], email="viewer@acme.test", is_staff=True, direct_permissions=["system:admin"])
    viewer.user_permissions.add(
        *DjangoPermission.objects.filter(codename__startswith="view_", content_type__app_label=app)
    )
    client.force_login(viewer)
    obj = world["rows"][key]
    response = client.get(reverse(f"admin:{app}_{model}_change", args=[obj.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    _assert_no_secret(html)
    assert "••••••" in html
    assert 'type="password"' not in html  # view-only: no inputs at all


def test_blank_secret_keeps_value_new_value_replaces_clear_empties(client, world):
    from security.models import OAuthConfig

    client.force_login(world["superuser"])
    config = world["rows"]["oauthconfig"]
    url = reverse("admin:security_oauthconfig_change", args=[config.pk])

    data = form_data(client.get(url))
    data["client_id"] = "client-renamed"
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    config = OAuthConfig.all_orgs.get(pk=config.pk)
    assert config.client_id == "client-renamed"
    assert config.client_secret == SECRET_MARKERS["oauth"]  # blank kept it

    data = form_data(client.get(url))
    data["client_secret"] = "brand-new-secret"
    assert client.post(url, data).status_code == 302
    assert OAuthConfig.all_orgs.get(pk=config.pk).client_secret == "brand-new-secret"

    data = form_data(client.get(url))
    data["client_secret__clear"] = "on"
    assert client.post(url, data).status_code == 302
    assert OAuthConfig.all_orgs.get(pk=config.pk).client_secret in (None, "")


def test_secret_change_is_in_admin_history_without_value(client, world):
    client.force_login(world["superuser"])
    config = world["rows"]["ldapconfig"]
    url = reverse("admin:security_ldapconfig_change", args=[config.pk])
    data = form_data(client.get(url))
    data["bind_password"] = "rotated-password-XYZZY"
    assert client.post(url, data).status_code == 302
    history = client.get(reverse("admin:security_ldapconfig_history", args=[config.pk])).content.decode()
    assert "Bind password" in history
    assert "rotated-password-XYZZY" not in history


def test_tool_credentials_keys_shown_values_write_only(client, world):
    from agentforge_agents.models import Tool

    client.force_login(world["superuser"])
    tool = world["rows"]["tool"]
    url = reverse("admin:agents_tool_change", args=[tool.pk])
    page = client.get(url)
    html = page.content.decode()
    assert "api_key" in html and "smtp_pass" in html  # keys are listed
    _assert_no_secret(html)

    # Row order is the sorted keys: 0 = api_key, 1 = smtp_pass; the value fields come back empty.
    for i, key in enumerate(["api_key", "smtp_pass"]):
        assert f'name="credentials__key__{i}" value="{key}"' in html
        assert f'name="credentials__val__{i}" value=""' in html
    data = form_data(page)
    data.update(
        {
            "credentials__key__0": "api_key",
            "credentials__val__0": "",  # keep
            "credentials__key__1": "smtp_pass",
            "credentials__del__1": "on",  # remove
            "credentials__newkey__0": "bot_token",
            "credentials__newval__0": "xoxb-new",
        }
    )
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    credentials = Tool.all_orgs.get(pk=tool.pk).credentials
    assert credentials == {"api_key": SECRET_MARKERS["tool_token"], "bot_token": "xoxb-new"}

    data = form_data(client.get(url))
    data.update(
        {"credentials__key__0": "api_key", "credentials__val__0": "rotated", "credentials__key__1": "bot_token"}
    )
    assert client.post(url, data).status_code == 302
    assert Tool.all_orgs.get(pk=tool.pk).credentials == {"api_key": "rotated", "bot_token": "xoxb-new"}


def test_tool_new_value_without_key_is_an_error(client, world):
    client.force_login(world["superuser"])
    tool = world["rows"]["tool"]
    url = reverse("admin:agents_tool_change", args=[tool.pk])
    data = form_data(client.get(url))
    data["credentials__newval__1"] = "orphan-value"
    response = client.post(url, data)
    assert response.status_code == 200
    assert "Every new value needs a key" in response.content.decode()
    assert "orphan-value" not in response.content.decode()


def test_changelist_columns_mask_secrets(client, world):
    client.force_login(world["superuser"])
    html = client.get(reverse("admin:security_oauthconfig_changelist")).content.decode()
    assert "•••••• (set)" in html
    html = client.get(reverse("admin:agents_tool_changelist")).content.decode()
    assert "2 key(s): api_key, smtp_pass" in html
    _assert_no_secret(html)


def test_org_admin_sees_masked_secrets_too(client, world, make_user):
    orgadmin = make_user(world["org"], email="admin@acme.test", is_staff=True)
    grant_all_model_permissions(orgadmin)
    client.force_login(orgadmin)
    for app, model, key in SECRET_PAGES:
        html = client.get(reverse(f"admin:{app}_{model}_change", args=[world["rows"][key].pk])).content.decode()
        _assert_no_secret(html)
