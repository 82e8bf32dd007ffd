"""API keys (plaintext shown once, revoke) and typed settings in the admin."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.admin_support import SECRET_MARKERS, admin_world, form_data, make_api_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_org, make_user):
    return admin_world(make_org, make_user, rows=False)


def _create_key(client, **extra):
    data = {"name": "Deploy bot", "scopes": "[]", "expires_at_0": "", "expires_at_1": "", "user": ""}
    data.update(extra)
    return client.post(reverse("admin:security_apikey_add"), data, follow=False)


@pytest.mark.parametrize("who", ["superuser", "orgadmin"])
def test_created_key_plaintext_shown_once(client, world, who):
    from security.models import APIKey

    client.force_login(world[who])
    response = _create_key(client, **({"org": str(world["org"].pk)} if who == "superuser" else {}))
    assert response.status_code == 302, response.content.decode()[:3000]
    key = APIKey.all_orgs.get(name="Deploy bot")
    assert response["Location"] == reverse("admin:security_apikey_change", args=[key.pk])
    assert key.org_id == world["org"].pk and key.created_by_id == world[who].pk

    first = client.get(response["Location"]).content.decode()
    match = re.search(r'id="new-api-key-value">([^<]+)<', first)
    assert match, "the plaintext is shown on the next page"
    plaintext = match.group(1)
    assert plaintext.startswith(key.prefix)
    assert APIKey.all_orgs.get_from_key(plaintext, record_use=False) == key
    assert key.key_hash not in first

    again = client.get(response["Location"]).content.decode()
    assert plaintext not in again and "new-api-key-value" not in again
    assert plaintext not in client.get(reverse("admin:security_apikey_changelist")).content.decode()
    # Not left behind in the session either.
    assert not any(plaintext in str(v) for v in client.session.values())


def test_plaintext_not_shown_for_another_key(client, world):
    from security.models import APIKey

    client.force_login(world["superuser"])
    other = make_api_key(world["org"], name="older")
    _create_key(client, org=str(world["org"].pk))
    html = client.get(reverse("admin:security_apikey_change", args=[other.pk])).content.decode()
    assert "new-api-key-value" not in html
    new = APIKey.all_orgs.get(name="Deploy bot")
    assert "new-api-key-value" in client.get(reverse("admin:security_apikey_change", args=[new.pk])).content.decode()


def test_list_columns_and_no_hash(client, world):
    client.force_login(world["superuser"])
    key = make_api_key(world["org"], name="CI")
    html = client.get(reverse("admin:security_apikey_changelist")).content.decode()
    for header in ("Prefix", "Name", "Organization", "Created", "Last used", "Expires", "Revoked"):
        assert header.lower() in html.lower(), header
    assert key.prefix in html and key.key_hash not in html
    change = client.get(reverse("admin:security_apikey_change", args=[key.pk])).content.decode()
    assert key.key_hash not in change and "key_hash" not in change


def test_revoke_action(client, world):
    from security.models import APIKey

    client.force_login(world["orgadmin"])
    mine = make_api_key(world["org"], name="mine")
    theirs = make_api_key(world["other"], name="theirs")
    response = client.post(
        reverse("admin:security_apikey_changelist"),
        {"action": "revoke_keys", "index": "0", "_selected_action": [str(mine.pk), str(theirs.pk)]},
    )
    assert response.status_code == 302
    assert APIKey.all_orgs.get(pk=mine.pk).revoked_at is not None
    assert APIKey.all_orgs.get(pk=mine.pk).revoked_by_id == world["orgadmin"].pk
    assert APIKey.all_orgs.get(pk=theirs.pk).revoked_at is None  # another org's key is out of reach


def test_key_for_another_orgs_user_is_refused(client, world, make_user):
    from security.models import APIKey

    client.force_login(world["orgadmin"])
    stranger = make_user(world["other"], email="stranger@globex.test")
    response = _create_key(client, user=str(stranger.pk))
    assert response.status_code == 200
    assert not APIKey.all_orgs.filter(name="Deploy bot").exists()


# -- settings ------------------------------------------------------------------------


def _setting(org, key, value, secret=False):
    from settings_app.models import OrgSetting

    setting = OrgSetting(org=org, key=key)
    setting.set_value(value, secret=secret)
    setting.save()
    return setting


def test_setting_form_renders_the_input_of_its_type(client, world):
    client.force_login(world["orgadmin"])
    setting = _setting(world["org"], "limits.max_tokens", 4096)
    page = client.get(reverse("admin:settings_app_orgsetting_change", args=[setting.pk]))
    form = page.context["adminform"].form
    assert form.initial["value_integer"] == 4096
    assert form["value_type"].value() == "integer"


@pytest.mark.parametrize(
    "value_type,field,raw,expected",
    [
        ("integer", "value_integer", "12", 12),
        ("float", "value_float", "0.25", 0.25),
        ("boolean", "value_boolean", "true", True),
        ("boolean", "value_boolean", "false", False),
        ("string", "value_string", "hello", "hello"),
        ("json", "value_json", '{"a": [1, 2]}', {"a": [1, 2]}),
    ],
)
def test_typed_values_are_saved_typed(client, world, value_type, field, raw, expected):
    from settings_app.models import OrgSetting

    client.force_login(world["orgadmin"])
    response = client.post(
        reverse("admin:settings_app_orgsetting_add"),
        {"key": f"k.{value_type}", "value_type": value_type, "description": "", field: raw},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    setting = OrgSetting.all_orgs.get(key=f"k.{value_type}")
    assert setting.org_id == world["org"].pk
    assert setting.value_type == value_type and setting.get_value() == expected and setting.is_secret is False
    assert setting.updated_by_id == world["orgadmin"].pk


def test_bad_typed_value_is_an_error(client, world):
    client.force_login(world["orgadmin"])
    response = client.post(
        reverse("admin:settings_app_orgsetting_add"),
        {"key": "k.bad", "value_type": "integer", "value_integer": "twelve"},
    )
    assert response.status_code == 200
    assert "Enter a whole number" in response.content.decode()


def test_secret_setting_is_write_only(client, world):
    from settings_app.models import OrgSetting

    client.force_login(world["orgadmin"])
    setting = _setting(world["org"], "llm.api_key", SECRET_MARKERS["setting"], secret=True)
    url = reverse("admin:settings_app_orgsetting_change", args=[setting.pk])
    page = client.get(url)
    assert SECRET_MARKERS["setting"] not in page.content.decode()
    assert (
        SECRET_MARKERS["setting"]
        not in client.get(reverse("admin:settings_app_orgsetting_changelist")).content.decode()
    )

    data = form_data(page)
    data["description"] = "The LLM key"
    assert client.post(url, data).status_code == 302
    setting = OrgSetting.all_orgs.get(pk=setting.pk)
    assert setting.get_value() == SECRET_MARKERS["setting"] and setting.description == "The LLM key"

    data = form_data(client.get(url))
    data["value_secret"] = "sk-rotated"
    assert client.post(url, data).status_code == 302
    assert OrgSetting.all_orgs.get(pk=setting.pk).get_value() == "sk-rotated"

    data = form_data(client.get(url))
    data.update({"value_type": "string", "value_string": "not secret any more"})
    assert client.post(url, data).status_code == 302
    setting = OrgSetting.all_orgs.get(pk=setting.pk)
    assert (setting.is_secret, setting.secret_value, setting.get_value()) == (False, None, "not secret any more")


def test_new_secret_setting_needs_a_value(client, world):
    client.force_login(world["orgadmin"])
    response = client.post(reverse("admin:settings_app_orgsetting_add"), {"key": "k.s", "value_type": "secret"})
    assert response.status_code == 200
    assert "Enter the secret value" in response.content.decode()


def test_duplicate_org_setting_key_is_a_form_error(client, world):
    client.force_login(world["orgadmin"])
    _setting(world["org"], "dup.key", 1)
    response = client.post(
        reverse("admin:settings_app_orgsetting_add"), {"key": "dup.key", "value_type": "integer", "value_integer": "2"}
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()


def test_system_setting_typed_and_secret(client, world):
    from settings_app.models import SystemSetting

    client.force_login(world["superuser"])
    response = client.post(
        reverse("admin:settings_app_systemsetting_add"),
        {"key": "integrations.openai_key", "value_type": "secret", "value_secret": SECRET_MARKERS["system_setting"]},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    setting = SystemSetting.objects.get(key="integrations.openai_key")
    assert setting.is_secret and setting.get_value() == SECRET_MARKERS["system_setting"]
    html = client.get(reverse("admin:settings_app_systemsetting_change", args=[setting.pk])).content.decode()
    assert SECRET_MARKERS["system_setting"] not in html and "•••••• (set)" in html
