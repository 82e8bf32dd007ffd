"""A changelist costs the same number of queries with 1 row as with a full page."""

from __future__ import annotations

import itertools

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.admin_support import grant_all_model_permissions, make_api_key, make_audit, populate, request_scope

pytestmark = pytest.mark.django_db

_n = itertools.count()


def _more(kind, org, user, rows):
    """One more row of ``kind`` (with the related rows its columns show)."""
    from accounts.models import Group, GroupMembership, MFASettings, Role, User, UserRole
    from agentforge_agents.models import Agent, AgentTool, AgentVersion, Tool
    from conversations.models import Conversation, Message
    from knowledge.models import Document, DocumentChunk

    i = next(_n)
    if kind == "user":
        u = User.all_orgs.create_user(email=f"bulk{i}@x.test", org=org)
        UserRole.all_orgs.create(org=org, user=u, role=rows["role"])
        MFASettings.all_orgs.create(org=org, user=u, enabled=True, methods=["totp"])
    elif kind == "agent":
        a = Agent.all_orgs.create(org=org, name=f"A{i}", owner=user)
        AgentVersion.all_orgs.create(org=org, agent=a, version=1)
        AgentTool.all_orgs.create(org=org, agent=a, tool=rows["tool"], tool_ref="x", position=0)
    elif kind == "tool":
        Tool.all_orgs.create(org=org, name=f"T{i}", type="api", owner=user, credentials={"token": "t"})
    elif kind == "document":
        d = Document.all_orgs.create(org=org, tool=rows["tool"], original_name=f"d{i}.pdf")
        DocumentChunk.all_orgs.create(org=org, document=d, chunk_id="1")
    elif kind == "conversation":
        c = Conversation.all_orgs.create(org=org, agent=rows["agent"], user=user, title=f"C{i}")
        Message.all_orgs.create(org=org, conversation=c, role="user", content="hi")
    elif kind == "role":
        Role.all_orgs.create(org=org, name=f"R{i}", parent=rows["role"])
    elif kind == "group":
        g = Group.all_orgs.create(org=org, name=f"G{i}")
        GroupMembership.all_orgs.create(org=org, group=g, user=user)
        g.roles.through.all_orgs.create(org=org, group=g, role=rows["role"])
    elif kind == "apikey":
        make_api_key(org, name=f"K{i}", user=user)
    elif kind == "auditlog":
        make_audit(org, actor=user)
    elif kind == "securityevent":
        from security.models import SecurityEvent

        SecurityEvent.all_orgs.create(org=org, event_type="login_failed", user=user)
    elif kind == "message":
        from conversations.models import Message

        Message.all_orgs.create(org=org, conversation=rows["conversation"], role="user", content=f"m{i}", position=i)


KINDS = [
    ("accounts", "user"),
    ("accounts", "role"),
    ("accounts", "group"),
    ("agents", "agent"),
    ("agents", "tool"),
    ("knowledge", "document"),
    ("conversations", "conversation"),
    ("conversations", "message"),
    ("security", "apikey"),
    ("security", "auditlog"),
    ("security", "securityevent"),
]


@pytest.mark.parametrize("app,kind", KINDS)
@pytest.mark.parametrize("who", ["superuser", "orgadmin"])
def test_changelist_queries_do_not_grow_with_rows(client, make_org, make_user, app, kind, who):
    org = make_org("Acme")
    superuser = make_user(org, email="root@acme.test", is_staff=True, is_superuser=True)
    orgadmin = make_user(org, email="admin@acme.test", is_staff=True)
    grant_all_model_permissions(orgadmin)
    member = make_user(org, email="member@acme.test")
    rows = populate(org, member)
    client.force_login(superuser if who == "superuser" else orgadmin)
    url = reverse(f"admin:{app}_{kind}_changelist")
    client.get(url)  # warm caches (content types, sessions)

    with CaptureQueriesContext(connection) as few:
        response = client.get(url)
    assert response.status_code == 200
    with request_scope(response):
        small = len(response.context["cl"].result_list)

    for _ in range(40):
        _more(kind, org, member, rows)
    with CaptureQueriesContext(connection) as many:
        response = client.get(url)
    with request_scope(response):
        assert len(response.context["cl"].result_list) >= small + 40 or len(response.context["cl"].result_list) >= 40
    assert len(many.captured_queries) == len(few.captured_queries), [q["sql"] for q in many.captured_queries]
