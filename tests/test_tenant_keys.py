"""Composite tenant keys: the database itself refuses a link between two organizations' rows
(PostgreSQL and MariaDB), whatever SQL writes it."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, models, transaction

from accounts.models import Organization
from accounts.tenant_schema import (
    link_statistics_name,
    org_key_name,
    org_link_name,
    policy_tables,
    tenant_links,
    tenant_models,
)
from agentforge_agents.models import Agent, AgentTool, Tool
from agentforge_core.tenancy import OrgScopeError, unscoped
from conversations.models import Conversation, Message

pytestmark = [pytest.mark.django_db, pytest.mark.backends("postgresql", "mysql")]


def _constraints(table):
    with connection.cursor() as cursor:
        return connection.introspection.get_constraints(cursor, table)


def test_the_model_walk_finds_every_tenant_table_and_link():
    tables = {m._meta.db_table for m in tenant_models(apps)}
    assert {"users", "agents", "agent_tools", "messages", "document_chunks", "audit_logs", "security_events"} <= tables
    assert "organizations" not in tables and "permissions" not in tables
    links = {(t, c, target) for t, c, target, _ in tenant_links(apps)}
    assert ("conversations", "agent_id", "agents") in links
    assert ("agent_tools", "tool_id", "tools") in links
    assert ("attachments", "message_id", "messages") in links
    # Links to global tables and links without a database constraint are not tenant links.
    assert not {link for link in links if link[2] in ("permissions", "organizations", "django_content_type")}
    assert ("audit_logs", "user_id", "users") not in links  # db_constraint=False (append-only log)
    assert policy_tables(apps)["organizations"] == "id"


@pytest.mark.parametrize("model", tenant_models(apps), ids=lambda m: m._meta.db_table)
def test_every_tenant_table_has_a_unique_org_and_id_key(model):
    table = model._meta.db_table
    key = _constraints(table)[org_key_name(table)]
    assert key["unique"] and key["columns"] == ["org_id", model._meta.pk.column]


@pytest.mark.parametrize("link", tenant_links(apps), ids=lambda link: f"{link[0]}.{link[1]}")
def test_every_link_between_tenant_tables_has_a_composite_foreign_key(link):
    table, column, target, target_column = link
    fk = _constraints(table)[org_link_name(table, column)]
    assert fk["columns"] == ["org_id", column]
    assert fk["foreign_key"] is not None and fk["foreign_key"][0] == target


@pytest.mark.backends("postgresql")
def test_every_link_between_tenant_tables_tells_the_planner_it_decides_the_organization():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.stxname, c.relname, s.stxkind, array(SELECT a.attname FROM unnest(s.stxkeys) k "
            "JOIN pg_attribute a ON a.attrelid = s.stxrelid AND a.attnum = k ORDER BY a.attname) "
            "FROM pg_statistic_ext s JOIN pg_class c ON c.oid = s.stxrelid"
        )
        found = {name: (table, kinds, sorted(columns)) for name, table, kinds, columns in cursor.fetchall()}
    links = tenant_links(apps)
    assert len(links) >= 20
    for table, column, _target, _target_column in links:
        assert found.get(link_statistics_name(table, column)) == (table, ["f"], sorted([column, "org_id"])), (
            table,
            column,
        )


@pytest.fixture
def two_orgs(db):
    a = Organization.objects.create(name="A", slug="keys-a")
    b = Organization.objects.create(name="B", slug="keys-b")
    agent_a = Agent.all_orgs.create(org=a, name="agent a")
    agent_b = Agent.all_orgs.create(org=b, name="agent b")
    tool_a = Tool.all_orgs.create(org=a, name="tool a")
    tool_b = Tool.all_orgs.create(org=b, name="tool b")
    conv_a = Conversation.all_orgs.create(org=a, agent=agent_a)
    return {
        "a": a,
        "b": b,
        "agent_a": agent_a,
        "agent_b": agent_b,
        "tool_a": tool_a,
        "tool_b": tool_b,
        "conv_a": conv_a,
    }


def _run(sql, params):
    """Run ``sql`` as system work (row-level security bypassed, so only the keys decide), with
    PostgreSQL's deferred constraints checked at once; return the affected row count."""
    with unscoped(), transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(sql, params)
        return cursor.rowcount


def _uuid(value):
    return Agent._meta.pk.get_db_prep_value(value, connection)  # uuid on PostgreSQL, char(32) on MariaDB


def _raw_insert(obj):
    """A hand-written INSERT of the unsaved ``obj`` (every concrete column), as system work."""
    fields = [f for f in obj._meta.concrete_fields if not (f.primary_key and getattr(obj, f.attname) is None)]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    values = [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
    marks = ", ".join(["%s"] * len(fields))
    return _run(f"INSERT INTO {obj._meta.db_table} ({columns}) VALUES ({marks})", values)


def test_raw_update_pointing_a_row_at_another_organizations_row_is_refused(two_orgs):
    w = two_orgs
    with pytest.raises(IntegrityError):
        _run("UPDATE conversations SET agent_id = %s WHERE id = %s", [_uuid(w["agent_b"].pk), _uuid(w["conv_a"].pk)])
    # The same statement with the organization's own agent goes through, and NULL stays allowed.
    assert (
        _run("UPDATE conversations SET agent_id = %s WHERE id = %s", [_uuid(w["agent_a"].pk), _uuid(w["conv_a"].pk)])
        == 1
    )
    assert _run("UPDATE conversations SET agent_id = NULL WHERE id = %s", [_uuid(w["conv_a"].pk)]) == 1


def test_raw_insert_of_a_link_row_across_organizations_is_refused(two_orgs):
    w = two_orgs
    with pytest.raises(IntegrityError):
        _raw_insert(AgentTool(org=w["a"], agent=w["agent_a"], tool=w["tool_b"], tool_ref="x", position=1))
    with pytest.raises(IntegrityError):  # both ends B's, the row claims A
        _raw_insert(AgentTool(org=w["a"], agent=w["agent_b"], tool=w["tool_b"], tool_ref="x", position=2))
    assert _raw_insert(AgentTool(org=w["a"], agent=w["agent_a"], tool=w["tool_a"], tool_ref="x", position=3)) == 1
    assert _raw_insert(AgentTool(org=w["a"], agent=w["agent_a"], tool=None, tool_ref="gone", position=4)) == 1


def test_moving_a_referenced_row_to_another_organization_is_refused(two_orgs):
    w = two_orgs
    Message.all_orgs.create(org=w["a"], conversation=w["conv_a"], role="user", content="hi")
    with pytest.raises(IntegrityError):  # its messages would point across organizations
        _run("UPDATE conversations SET org_id = %s WHERE id = %s", [_uuid(w["b"].pk), _uuid(w["conv_a"].pk)])
    with pytest.raises(IntegrityError):  # the ORM's unscoped update meets the same key
        with unscoped(), transaction.atomic():
            if connection.vendor == "postgresql":
                connection.cursor().execute("SET CONSTRAINTS ALL IMMEDIATE")
            Conversation.all_orgs.filter(pk=w["conv_a"].pk).update(agent=w["agent_b"])


def test_orm_link_across_organizations_is_refused_at_commit(two_orgs):
    """Without SET CONSTRAINTS: PostgreSQL checks the deferred key when the transaction
    commits, MariaDB at the statement; either way nothing crosses."""
    w = two_orgs
    with pytest.raises(OrgScopeError):  # the ORM's own check comes first
        with unscoped(), transaction.atomic():
            AgentTool.all_orgs.create(org=w["a"], agent=w["agent_a"], tool=w["tool_b"])
    with pytest.raises(IntegrityError):  # a bug around it (Model.save without the check) meets the key
        with unscoped(), transaction.atomic():
            models.Model.save(AgentTool(org=w["a"], agent=w["agent_a"], tool=w["tool_b"]))
            connection.check_constraints()  # what COMMIT does with the deferred keys
    with unscoped():
        assert not AgentTool.all_orgs.filter(tool=w["tool_b"]).exists()
