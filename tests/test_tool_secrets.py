"""Credentials typed into a tool's config or api_config move into the encrypted column on every
save path (admin, save(), create, bulk_create, bulk_update), never stay in clear, nor in the audit diff."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.urls import reverse

from agentforge_agents.models import Tool
from agentforge_core.tenancy import org_scope, unscoped
from security.models import AuditLog
from tests.admin_support import form_data, populate

pytestmark = pytest.mark.django_db

TYPED = "sk-typed-Q7Z"
BEARER = "Bearer typed-W3X"


def raw_row(tool) -> str:
    """Every stored column of the tool, as the database holds it (ciphertext for credentials).
    Hand-written SQL: system work (PostgreSQL's row-level security shows it nothing otherwise)."""
    with unscoped(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT config, api_config, kb_config, credentials FROM tools WHERE id = %s",
            [tool.pk if connection.vendor == "postgresql" else tool.pk.hex],
        )
        return json.dumps([str(value) for value in cursor.fetchone()])


def audit_text(tool) -> str:
    return json.dumps([e.changes for e in AuditLog.all_orgs.filter(object_pk=str(tool.pk))], default=str)


def assert_moved(tool, credentials):
    stored = Tool.all_orgs.get(pk=tool.pk)
    assert stored.credentials == credentials
    text = raw_row(tool) + audit_text(tool)
    assert TYPED not in text and "typed-W3X" not in text
    return stored


def test_create_and_save_move_credentials(make_org):
    org = make_org()
    with org_scope(org):
        tool = Tool.objects.create(type="api", name="Weather", config={"url": "https://x", "api_key": TYPED})
        assert tool.config == {"url": "https://x"}
        tool.api_config = {"headers": {"Authorization": BEARER, "Accept": "json"}, "auth_value": ""}
        tool.save()
    stored = assert_moved(tool, {"config.api_key": TYPED, "api_config.headers.Authorization": BEARER})
    assert stored.api_config == {"headers": {"Accept": "json"}, "auth_value": ""}  # an empty value is no secret
    with org_scope(org):
        stored.config = {"url": "https://y", "api_key": "sk-rotated"}
        stored.save(update_fields=["config"])
    assert Tool.all_orgs.get(pk=tool.pk).credentials["config.api_key"] == "sk-rotated"
    assert "sk-rotated" not in raw_row(tool)


def test_bulk_create_and_bulk_update_move_credentials_and_update_refuses_them(make_org):
    org = make_org()
    with org_scope(org):
        [tool] = Tool.objects.bulk_create([Tool(org=org, type="api", name="Bulk", config={"token": TYPED})])
        assert_moved(tool, {"config.token": TYPED})
        tool = Tool.objects.get(pk=tool.pk)
        tool.api_config = {"headers": {"x-api-key": BEARER}}
        Tool.objects.bulk_update([tool], ["api_config"])
        assert_moved(tool, {"config.token": TYPED, "api_config.headers.x-api-key": BEARER})
        with pytest.raises(ValueError, match="tools.config: config.password would be stored in clear"):
            Tool.objects.filter(pk=tool.pk).update(config={"password": "hunter2"})
        Tool.objects.filter(pk=tool.pk).update(config={"url": "https://z"})  # no secret: allowed
    assert Tool.all_orgs.get(pk=tool.pk).config == {"url": "https://z"}


def test_credentials_typed_into_the_admin_config_move(client, make_org, make_user):
    org = make_org("Acme")
    superuser = make_user(org, email="root@acme.test", is_staff=True, is_superuser=True)
    tool = populate(org, make_user(org, email="member@acme.test"))["tool"]
    before = Tool.all_orgs.get(pk=tool.pk).credentials
    client.force_login(superuser)
    url = reverse("admin:agents_tool_change", args=[tool.pk])
    data = form_data(client.get(url))
    data["config"] = json.dumps({"endpoint": "https://api.example", "api_key": TYPED})
    data["api_config"] = json.dumps({"headers": {"Authorization": BEARER}})
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    stored = assert_moved(tool, {**before, "config.api_key": TYPED, "api_config.headers.Authorization": BEARER})
    assert stored.config == {"endpoint": "https://api.example"} and stored.api_config == {"headers": {}}
