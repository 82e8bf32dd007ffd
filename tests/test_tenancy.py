"""Organization scoping: every tenant model fails closed and never shows another
organization's rows, through managers, related managers, aggregates, async code and threads."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import io
import itertools
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import sync_to_async
from django import forms
from django.apps import apps
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import ObjectDoesNotExist
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, connections, models, transaction
from django.db.models import Count, Exists, OuterRef, Sum
from django.http import HttpResponse
from django.test import RequestFactory
from django.test.utils import isolate_apps
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from accounts.checks import tenant_model_errors
from accounts.middleware import OrganizationScopeMiddleware
from accounts.models import Organization, Role, User
from agentforge_agents.models import Agent, AgentTool, Tool
from agentforge_core.models import OrgOwnedModel, is_org_scoped, scope_field, tenant_links
from agentforge_core.tenancy import ALL_ORGS, OrgScopeError, current_org, current_org_id, org_scope, unscoped
from conversations.models import Conversation, Message
from knowledge.models import Document, DocumentChunk
from knowledge.vectors import semantic_search
from security.models import SecurityEvent

_seq = itertools.count(1)


# --- the model walk ----------------------------------------------------------------------


def tenant_models(registry=apps):
    """The models with an ``org`` foreign key: the ones accounts.checks holds to scoping."""
    return [m for m in registry.get_models() if (field := scope_field(m)) is not None and not field.primary_key]


def test_the_walk_finds_the_tenant_models():
    labels = {m._meta.label for m in tenant_models()}
    assert {
        "agents.Agent",
        "knowledge.DocumentChunk",
        "conversations.Message",
        "accounts.User",
        "security.AuditLog",
        "settings_app.OrgSetting",
        "accounts.Role",
    } <= labels
    assert "accounts.Organization" not in labels
    assert len(labels) >= 25


@isolate_apps("accounts")
def test_the_system_check_refuses_a_new_model_that_forgets_scoping():
    class Forgetful(models.Model):
        org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")

        class Meta:
            app_label = "accounts"

    class Remembers(OrgOwnedModel):
        # The class, not org_foreign_key's "accounts.Organization": the isolated registry cannot resolve a name.
        org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")

        class Meta:
            app_label = "accounts"

    assert set(tenant_models(Forgetful._meta.apps)) == {Forgetful, Remembers}
    errors = tenant_model_errors([Forgetful, Remembers])
    assert [(e.obj, e.id) for e in errors] == [
        (Forgetful, "accounts.E001"),
        (Forgetful, "accounts.E002"),
        (Forgetful, "accounts.E003"),
        (Forgetful, "accounts.E004"),
        (Forgetful, "accounts.E005"),
    ]


def test_manage_py_check_refuses_an_unscoped_tenant_model(monkeypatch):
    from accounts import checks as tenant_checks

    assert tenant_model_errors(apps.get_models()) == []
    monkeypatch.setattr(Agent._meta, "default_manager", Agent._base_manager)  # a plain Manager
    monkeypatch.setattr(tenant_checks, "UNCHECKED_WRITES", {"accounts.User"})
    errors = tenant_model_errors([Agent, Tool, User, SecurityEvent, apps.get_model("security", "AuditLog")])
    assert [(e.obj, e.id) for e in errors] == [
        (Agent, "accounts.E001"),
        (Agent, "accounts.E004"),
        (apps.get_model("security", "AuditLog"), "accounts.E003"),
    ]


# --- a generic row factory for every tenant model ----------------------------------------


def _value(field):
    n = next(_seq)
    if field.choices:
        return field.choices[0][0]
    if isinstance(field, models.EmailField):
        return f"f{n}@example.com"
    if isinstance(field, (models.CharField, models.TextField)):
        value = f"v{n}-{uuid.uuid4().hex}"
        return value[: field.max_length] if field.max_length else value
    if isinstance(field, models.IntegerField):
        return n
    if isinstance(field, models.DateTimeField):
        return timezone.now()
    if isinstance(field, models.BooleanField):
        return False
    raise AssertionError(f"no test value for {field!r}")  # a new field type: extend _value


def make_row(model, org):
    """A saved row of ``model`` in ``org``, with related rows (same org) for required FKs."""
    if model is Organization:
        return org
    if model is User:
        return User.all_orgs.create_user(email=f"u{next(_seq)}@example.com", org=org)
    values = {}
    for field in model._meta.concrete_fields:
        if field.primary_key or field.name == "org" or field.null or field.has_default():
            continue
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            continue
        values[field.name] = make_row(field.related_model, org) if field.is_relation else _value(field)
    if scope_field(model) is None:
        return model._default_manager.create(**values)
    return model.all_orgs.create(org=org, **values)


@pytest.mark.parametrize(
    "model",
    [m for m in tenant_models() if m is not User],
    ids=lambda m: m._meta.label,
)
def test_every_tenant_model_fails_closed_and_filters(model, make_org):
    a, b = make_org(), make_org()
    row_a, row_b = make_row(model, a), make_row(model, b)

    # No organization active: every way of running a query raises.
    with pytest.raises(OrgScopeError):
        list(model.objects.all())
    with pytest.raises(OrgScopeError):
        model.objects.count()
    with pytest.raises(OrgScopeError):
        model.objects.filter(pk=row_a.pk).exists()

    with org_scope(a):
        rows = list(model.objects.all())
        assert row_a.pk in {r.pk for r in rows}
        assert {r.org_id for r in rows} == {a.pk}
        assert model.objects.count() == model.all_orgs.filter(org=a).count()
        assert not model.objects.filter(pk=row_b.pk).exists()
        with pytest.raises(model.DoesNotExist):
            model.objects.get(pk=row_b.pk)
    with org_scope(b):
        assert row_b.pk in set(model.objects.values_list("pk", flat=True))
        assert row_a.pk not in set(model.objects.values_list("pk", flat=True))

    # The unscoped manager sees both outside a scope and inside unscoped(); inside A's scope
    # PostgreSQL's row-level security still holds it to A's rows (the second wall).
    assert model.all_orgs.filter(pk__in=[row_a.pk, row_b.pk]).count() == 2
    with unscoped():
        assert model.all_orgs.filter(pk__in=[row_a.pk, row_b.pk]).count() == 2
    with org_scope(a):
        expected = 1 if connection.vendor == "postgresql" else 2
        assert model.all_orgs.filter(pk__in=[row_a.pk, row_b.pk]).count() == expected


def test_the_user_model_is_scoped_and_all_orgs_serves_authentication(make_org, make_user):
    a, b = make_org(), make_org(legacy_id="org_users_b")
    user_a, user_b = make_user(a), make_user(b)
    with pytest.raises(OrgScopeError):
        list(User.objects.all())
    with pytest.raises(OrgScopeError):
        User.objects.in_current_org()
    # Authentication and system work find users before any organization is known.
    assert {user_a.pk, user_b.pk} <= set(User.all_orgs.values_list("pk", flat=True))
    assert list(User.all_orgs.for_org(a)) == [user_a]
    assert list(User.all_orgs.for_org("org_users_b")) == [user_b]
    with org_scope(a):
        assert list(User.objects.all()) == [user_a]
        assert list(User.objects.in_current_org()) == [user_a]
        assert list(a.users.all()) == [user_a]
        assert list(b.users.all()) == []
        assert list(User.objects.for_org(b)) == []


# --- org_scope itself --------------------------------------------------------------------


def test_org_scope_accepts_object_uuid_string_and_legacy_id(make_org):
    org = make_org(legacy_id="org_acme")
    for ref in (org, org.pk, str(org.pk), "org_acme"):
        with org_scope(ref) as active:
            assert active == org.pk
            assert current_org() == org.pk
            assert current_org_id() == org.pk
        assert current_org() is None
    for bad in ("org_nowhere", None, 42, Organization(name="unsaved")):
        with pytest.raises(OrgScopeError):
            with org_scope(bad):
                pass  # pragma: no cover


def test_scopes_nest_and_restore(make_org):
    a, b = make_org(), make_org()
    assert current_org() is None
    with pytest.raises(OrgScopeError):
        current_org_id()
    with org_scope(a):
        with org_scope(b):
            assert current_org() == b.pk
        assert current_org() == a.pk
        with unscoped():
            assert current_org() is ALL_ORGS
            with pytest.raises(OrgScopeError):
                current_org_id()  # "all organizations" is not an organization
        assert current_org() == a.pk
        with pytest.raises(RuntimeError):
            with org_scope(b):
                raise RuntimeError("boom")
        assert current_org() == a.pk
    assert current_org() is None


def test_org_scope_as_a_decorator(make_org):
    a = make_org()
    Agent.all_orgs.create(org=a, name="decorated")

    @org_scope(a)
    def names():
        return current_org(), list(Agent.objects.values_list("name", flat=True))

    assert names() == (a.pk, ["decorated"])
    assert names() == (a.pk, ["decorated"])  # reusable
    assert current_org() is None


# --- writes ------------------------------------------------------------------------------


def test_creating_inside_a_scope_fills_the_organization(make_org):
    a = make_org()
    with org_scope(a):
        agent = Agent.objects.create(name="filled")
        tool = Tool(name="t", type=Tool.Type.API)
        tool.save()
        # An org id given as a string of the active organization is the same organization.
        same = Agent(name="string id", org_id=str(a.pk))
        same.save()
        link = AgentTool.objects.create(agent=agent, tool=tool, tool_ref=str(tool.pk))
    assert Agent.all_orgs.get(pk=agent.pk).org_id == a.pk
    assert Tool.all_orgs.get(pk=tool.pk).org_id == a.pk
    assert AgentTool.all_orgs.get(pk=link.pk).org_id == a.pk
    assert Agent.all_orgs.get(pk=same.pk).org_id == a.pk


def test_writing_another_organizations_row_inside_a_scope_raises(make_org):
    a, b = make_org(), make_org()
    theirs = Agent.all_orgs.create(org=b, name="theirs")
    with org_scope(a):
        theirs.name = "hijacked"
        with pytest.raises(OrgScopeError):
            theirs.save()
        with pytest.raises(OrgScopeError):
            Agent.objects.create(org=b, name="planted")
        with pytest.raises(OrgScopeError):
            theirs.delete()
        with pytest.raises(OrgScopeError):
            Agent.objects.bulk_update([theirs], ["name"])
    assert Agent.all_orgs.get(pk=theirs.pk).name == "theirs"
    assert Agent.all_orgs.filter(org=b).count() == 1


def test_writing_with_no_organization_at_all_raises(make_org):
    with pytest.raises(OrgScopeError):
        Agent(name="homeless").save()
    with pytest.raises(OrgScopeError):
        Agent.all_orgs.create(name="homeless")
    with pytest.raises(OrgScopeError):
        Agent.all_orgs.bulk_create([Agent(name="homeless")])
    assert not Agent.all_orgs.filter(name="homeless").exists()
    # System work names the organization explicitly.
    org = make_org()
    assert Agent.all_orgs.create(org=org, name="imported").org_id == org.pk


def test_a_nullable_organization_may_stay_empty_outside_a_scope(make_org):
    # A security event for an unknown email concerns no organization.
    event = SecurityEvent.all_orgs.create(event_type=SecurityEvent.EventType.LOGIN_FAILED, email="x@y.z")
    assert event.org_id is None
    org = make_org()
    with org_scope(org):
        inside = SecurityEvent.objects.create(event_type=SecurityEvent.EventType.LOGIN_FAILED)
        assert inside.org_id == org.pk
        assert list(SecurityEvent.objects.all()) == [inside]


def test_bulk_create_is_checked(make_org):
    a, b = make_org(), make_org()
    with org_scope(a):
        created = Agent.objects.bulk_create(Agent(name=f"bulk {i}") for i in range(3))
        assert {agent.org_id for agent in created} == {a.pk}
        with pytest.raises(OrgScopeError):
            Agent.objects.bulk_create([Agent(name="ok"), Agent(org=b, name="smuggled")])
        # Model-specific querysets keep the check (DocumentChunk has its own).
        with pytest.raises(OrgScopeError):
            DocumentChunk.objects.bulk_create([DocumentChunk(org=b, chunk_id="1")])
        DocumentChunk.objects.bulk_create([DocumentChunk(chunk_id="2")])
    assert Agent.all_orgs.filter(org=a).count() == 3
    assert not Agent.all_orgs.filter(name__in=["ok", "smuggled"]).exists()
    assert list(DocumentChunk.all_orgs.values_list("org_id", "chunk_id")) == [(a.pk, "2")]


def test_queryset_update_and_delete_touch_only_the_active_organization(make_org):
    a, b = make_org(), make_org()
    for org in (a, b):
        Agent.all_orgs.bulk_create([Agent(org=org, name=f"{org.slug}-{i}") for i in range(2)])
    with org_scope(a):
        assert Agent.objects.update(goal="renamed") == 2
        assert Agent.objects.filter(name__endswith="-0").delete()[0] == 1
    assert Agent.all_orgs.filter(org=b, goal="").count() == 2
    assert Agent.all_orgs.filter(org=a).count() == 1


def test_a_queryset_built_outside_a_scope_is_checked_when_it_runs(make_org):
    a, b = make_org(), make_org()
    mine = Agent.all_orgs.create(org=a, name="mine")
    theirs = Agent.all_orgs.create(org=b, name="theirs")
    pending = Agent.objects.order_by("name")  # building it is fine: nothing has run yet
    for run in (
        list,
        len,
        lambda qs: qs.count(),
        lambda qs: qs.exists(),
        lambda qs: qs.update(goal="x"),
        lambda qs: qs.delete(),
        lambda qs: str(qs.query),
        lambda qs: list(Conversation.all_orgs.filter(agent__in=qs)),
    ):
        with pytest.raises(OrgScopeError), transaction.atomic():
            run(pending)
    assert Agent.all_orgs.count() == 2
    with org_scope(a):
        assert list(pending.all()) == [mine]
        assert pending.count() == 1
        # As a subquery and in a union, too.
        assert list(Agent.all_orgs.filter(pk__in=pending.values("pk"))) == [mine]
        assert list(pending.order_by().union(Agent.objects.filter(name="theirs").order_by())) == [mine]
        assert list(Agent.all_orgs.filter(Exists(pending.filter(pk=OuterRef("pk"))))) == [mine]
    with org_scope(b):
        assert list(pending.all()) == [theirs]
    with unscoped():
        assert list(pending.all()) == [mine, theirs]


class ConversationForm(forms.ModelForm):
    """Built at import time, with no organization active: its agent choices are scoped later."""

    class Meta:
        model = Conversation
        fields = ["title", "agent"]


def test_a_modelform_built_at_import_offers_only_the_active_organizations_rows(make_org):
    a, b = make_org(), make_org()
    mine = Agent.all_orgs.create(org=a, name="mine")
    theirs = Agent.all_orgs.create(org=b, name="theirs")
    with org_scope(a):
        form = ConversationForm(data={"title": "t", "agent": str(theirs.pk)})
        choices = [value for value, _ in form.fields["agent"].choices if value]
        assert [str(v) for v in choices] == [str(mine.pk)]
        assert not form.is_valid() and "agent" in form.errors
        form = ConversationForm(data={"title": "t", "agent": str(mine.pk)})
        assert form.is_valid(), form.errors
        assert form.save().org_id == a.pk
    with pytest.raises(OrgScopeError):
        list(ConversationForm().fields["agent"].choices)


# --- related managers --------------------------------------------------------------------


def test_related_managers_are_scoped_and_fail_closed(make_org):
    a, b = make_org(), make_org()
    agent_b = Agent.all_orgs.create(org=b, name="b")
    Conversation.all_orgs.create(org=b, agent=agent_b)
    with pytest.raises(OrgScopeError):
        list(b.agents.all())
    with pytest.raises(OrgScopeError):
        agent_b.conversations.count()
    with org_scope(a):
        assert list(b.agents.all()) == []
        assert agent_b.conversations.count() == 0
        assert list(agent_b.tools.all()) == []
    with org_scope(b):
        assert list(b.agents.all()) == [agent_b]
        assert agent_b.conversations.count() == 1


# --- property: random rows in three organizations ----------------------------------------

_org_world = st.fixed_dictionaries(
    {
        "tools": st.integers(0, 3),
        "roles": st.integers(0, 2),
        # each agent: indexes of its tools, and the message count of each conversation
        "agents": st.lists(
            st.fixed_dictionaries(
                {
                    "tools": st.lists(st.integers(0, 2), max_size=3, unique=True),
                    "conversations": st.lists(st.integers(0, 3), max_size=2),
                }
            ),
            max_size=3,
        ),
        # each document: its chunks, as small embedding vectors
        "documents": st.lists(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), max_size=3), max_size=2),
    }
)


def _build_org(org, spec):
    """Rows of one organization, written inside its scope; returns what it should see."""
    want = {
        "roles": set(),
        "tools": set(),
        "agents": set(),
        "agent_tools": set(),
        "conversations": set(),
        "messages": set(),
        "documents": set(),
        "chunks": set(),
        "agent_tool_ids": {},
        "agent_conversations": {},
        "conversation_messages": {},
        "position_sum": 0,
    }
    with org_scope(org):
        want["roles"] = {Role.objects.create(name=f"role {i}").pk for i in range(spec["roles"])}
        tools = Tool.objects.bulk_create(Tool(name=f"tool {i}", type=Tool.Type.API) for i in range(spec["tools"]))
        want["tools"] = {t.pk for t in tools}
        for i, agent_spec in enumerate(spec["agents"]):
            agent = Agent.objects.create(name=f"agent {i}")
            want["agents"].add(agent.pk)
            linked = [tools[j] for j in agent_spec["tools"] if j < len(tools)]
            links = AgentTool.objects.bulk_create(
                AgentTool(agent=agent, tool=tool, tool_ref=str(tool.pk), position=p) for p, tool in enumerate(linked)
            )
            want["agent_tools"] |= {link.pk for link in links}
            want["agent_tool_ids"][agent.pk] = {t.pk for t in linked}
            want["agent_conversations"][agent.pk] = set()
            for n_messages in agent_spec["conversations"]:
                conv = Conversation.objects.create(agent=agent, title="chat")
                want["conversations"].add(conv.pk)
                want["agent_conversations"][agent.pk].add(conv.pk)
                messages = Message.objects.bulk_create(
                    Message(conversation=conv, role=Message.Role.USER, content="hi", position=p + 1)
                    for p in range(n_messages)
                )
                want["messages"] |= {m.pk for m in messages}
                want["conversation_messages"][conv.pk] = {m.pk for m in messages}
                want["position_sum"] += sum(m.position for m in messages)
        for d, chunk_specs in enumerate(spec["documents"]):
            doc = Document.objects.create(title=f"doc {d}", tool=tools[0] if tools else None)
            want["documents"].add(doc.pk)
            for c, vector in enumerate(chunk_specs):
                chunk = DocumentChunk(document=doc, tool=doc.tool, chunk_id=str(c), text="x", index_position=c)
                chunk.set_embedding([float(vector[0]), float(vector[1])])
                chunk.save()
                want["chunks"].add(chunk.pk)
    return want


def _pks(queryset):
    return set(queryset.values_list("pk", flat=True))


@pytest.mark.django_db
@hsettings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(worlds=st.lists(_org_world, min_size=3, max_size=3))
def test_no_scoped_query_related_manager_or_aggregate_leaks(worlds):
    with transaction.atomic():
        orgs = [Organization.all_orgs.create(name=f"P{i}", slug=f"prop-{next(_seq)}") for i in range(3)]
        wants = [_build_org(org, spec) for org, spec in zip(orgs, worlds)]
        pending_agents = Agent.objects.all()  # built with no organization active
        for org, want in zip(orgs, wants):
            others = [o for o in orgs if o is not org]
            with org_scope(org):
                # Plain scoped queries, per table.
                assert _pks(Role.objects.all()) == want["roles"]
                assert _pks(Tool.objects.all()) == want["tools"]
                assert _pks(Agent.objects.all()) == want["agents"]
                assert _pks(pending_agents.all()) == want["agents"]
                assert _pks(AgentTool.objects.all()) == want["agent_tools"]
                assert _pks(Conversation.objects.all()) == want["conversations"]
                assert _pks(Message.objects.all()) == want["messages"]
                assert _pks(Document.objects.all()) == want["documents"]
                assert _pks(DocumentChunk.objects.all()) == want["chunks"]
                assert _pks(Message.objects.filter(conversation__in=Conversation.objects.all())) == want["messages"]

                # Aggregates over scoped querysets.
                assert Agent.objects.count() == len(want["agents"])
                assert Message.objects.aggregate(n=Count("id"), s=Sum("position")) == {
                    "n": len(want["messages"]),
                    "s": want["position_sum"] or None,
                }
                counts = dict(Agent.objects.annotate(n=Count("conversations")).values_list("pk", "n"))
                assert counts == {pk: len(c) for pk, c in want["agent_conversations"].items()}
                per_conv = dict(Message.objects.values_list("conversation").annotate(n=Count("id")))
                assert per_conv == {pk: len(m) for pk, m in want["conversation_messages"].items() if m}
                tool_use = dict(Tool.objects.annotate(n=Count("agents")).values_list("pk", "n"))
                assert set(tool_use) == want["tools"]
                assert sum(tool_use.values()) == len(want["agent_tools"])
                assert {h.chunk.pk for h in semantic_search([1.0, 0.5], limit=100)} == want["chunks"]

                # Related managers, ours and the other organizations'.
                assert _pks(org.agents.all()) == want["agents"]
                assert org.documents.count() == len(want["documents"])
                for agent_pk, tool_pks in want["agent_tool_ids"].items():
                    agent = Agent.objects.get(pk=agent_pk)
                    assert _pks(agent.tools.all()) == tool_pks
                    assert _pks(agent.conversations.all()) == want["agent_conversations"][agent_pk]
                for conv_pk, message_pks in want["conversation_messages"].items():
                    assert _pks(Conversation.objects.get(pk=conv_pk).messages.all()) == message_pks
                for other, other_want in zip(orgs, wants):
                    if other is org:
                        continue
                    assert other.agents.count() == 0
                    assert not other.messages.exists()
                    for agent in Agent.all_orgs.filter(pk__in=other_want["agents"]):
                        assert agent.conversations.count() == 0
                        assert list(agent.tools.all()) == []
                    for conv in Conversation.all_orgs.filter(pk__in=other_want["conversations"]):
                        assert conv.messages.count() == 0
                assert not Agent.objects.filter(org__in=others).exists()
        transaction.set_rollback(True)


# --- property: every relation path from every model, in three organizations ---------------


def scoped_models():
    """Every model whose default manager scopes its rows: tenant tables, User, Organization."""
    return [
        m for m in apps.get_models() if scope_field(m) is not None and is_org_scoped(m._default_manager.all().query)
    ]


def relation_paths(model, depth=2, prefix=()):
    """``(lookup path, model reached)`` for every relation into a tenant table, ``depth`` hops deep."""
    found = []
    for field in model._meta.get_fields():
        if not field.is_relation or field.related_model is None or scope_field(field.related_model) is None:
            continue
        path = (*prefix, field.name)
        found.append(("__".join(path), field.related_model))
        if depth > 1:
            found.extend(relation_paths(field.related_model, depth - 1, path))
    return found


PATHS = sorted(
    {(model, path, target) for model in scoped_models() for path, target in relation_paths(model)},
    key=lambda item: (item[0]._meta.label, item[1]),
)
# Links a bug could plant between two organizations' rows: (model, foreign key). The audit
# trail is append-only (no UPDATE can plant anything there).
LINKS = sorted(
    {(m, f.name) for m in scoped_models() if m._meta.label != "security.AuditLog" for f in tenant_links(m)},
    key=lambda x: (x[0]._meta.label, x[1]),
)


def _row(rows, model):
    return rows["org"] if model is Organization else rows["user"] if model is User else rows.get(model._meta.model_name)


def _org_of(model, pk):
    field = scope_field(model)
    if field.primary_key:
        return pk
    with unscoped():  # the system's look-up (PostgreSQL's row-level security would hide other organizations)
        return model._base_manager.filter(pk=pk).values_list(field.attname, flat=True).first()


@pytest.fixture
def three_worlds(make_org, make_user):
    from tests.admin_support import populate

    orgs = [make_org(f"W{i}") for i in range(3)]
    return orgs, [populate(org, make_user(org), suffix=f"-w{i}") for i, org in enumerate(orgs)]


def test_the_path_walk_covers_every_scoped_model_and_the_attacked_paths():
    found = {(model, path) for model, path, _ in PATHS}
    for attacked in [
        (User, "mfa"),
        (User, "owned_tools"),
        (User, "conversations__messages"),
        (Organization, "tools"),
        (Organization, "ldap_configs"),
        (Agent, "tools"),
        (Agent, "conversations__messages"),
    ]:
        assert attacked in found
    assert set(scoped_models()) == {model for model, _, _ in PATHS}
    assert {User, Organization, DocumentChunk, Message} <= set(scoped_models())
    assert (Conversation, "agent") in LINKS and (AgentTool, "tool") in LINKS


@pytest.mark.django_db
@hsettings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    plants=st.lists(st.tuples(st.sampled_from(LINKS), st.integers(0, 2), st.integers(0, 2)), max_size=6),
    paths=st.lists(st.sampled_from(PATHS), min_size=1, max_size=12, unique=True),
    active=st.integers(0, 2),
)
def test_no_relation_path_from_any_model_leaves_the_active_organization(three_worlds, plants, paths, active):
    orgs, worlds = three_worlds
    with transaction.atomic():
        # Bugs of the past: links from one organization's rows to another's, stored around the checks.
        for (model, name), src, dst in plants:
            row, target = _row(worlds[src], model), _row(worlds[dst], model._meta.get_field(name).related_model)
            if row is not None and target is not None:
                try:
                    with transaction.atomic():
                        model.all_orgs.filter(pk=row.pk).update(**{name: target.pk})
                except IntegrityError:
                    pass  # a unique key (one MFA row per user...) refuses this plant
        org = orgs[active]
        for model, path, target in paths:
            # With no organization active, the query does not run.
            with pytest.raises(OrgScopeError):
                list(model.objects.values_list(f"{path}__pk"))
            with org_scope(org):
                # The organization column of the row reached (read from that row, so the join
                # is not trimmed away: a foreign key's value is the linking row's own data).
                reached = set(model.objects.values_list(f"{path}__{scope_field(target).attname}", flat=True))
                assert reached <= {org.pk, None}, (model, path)
                filtered = set(model.objects.filter(**{f"{path}__isnull": False}).values_list("pk", flat=True))
                assert {_org_of(model, pk) for pk in filtered} <= {org.pk}, (model, path)
                with pytest.raises(OrgScopeError, match="raw SQL"):
                    model.objects.raw(f"SELECT * FROM {model._meta.db_table}")
                if connection.vendor == "postgresql":
                    # The second wall: the same queries with the ORM's scoping switched off
                    # (the unscoped manager, hand-written SQL) still stay in this organization.
                    unscoped_manager = getattr(model, "all_orgs", None) or model._base_manager
                    reached = set(unscoped_manager.values_list(f"{path}__{scope_field(target).attname}", flat=True))
                    assert reached <= {org.pk, None}, ("row-level security", model, path)
                    column = connection.ops.quote_name(scope_field(model).column)
                    raw_orgs = {
                        getattr(row, scope_field(model).attname)
                        for row in unscoped_manager.raw(
                            f"SELECT * FROM {connection.ops.quote_name(model._meta.db_table)} WHERE {column} IS NOT NULL"
                        )
                    }
                    assert raw_orgs <= {org.pk}, ("row-level security, raw SQL", model)
                if "__" in path:
                    continue
                # One hop: the accessor of every row, this organization's and (fetched the
                # system way) the others'.
                field = model._meta.get_field(path)
                for world in worlds:
                    row = _row(world, model)
                    if row is None:
                        continue
                    if hasattr(type(row), "all_orgs"):
                        with unscoped():
                            row = type(row).all_orgs.get(pk=row.pk)
                    try:
                        value = getattr(
                            row, field.get_accessor_name() if field.auto_created and not field.concrete else path
                        )
                        objs = list(value.all()) if hasattr(value, "all") else [value]
                    except (ObjectDoesNotExist, OrgScopeError):
                        continue
                    for obj in objs:
                        if obj is not None and hasattr(obj, "pk"):
                            assert _org_of(target, obj.pk) == org.pk, (model, path, obj)
        transaction.set_rollback(True)


# --- dumpdata and loaddata ---------------------------------------------------------------


def test_stock_dumpdata_cannot_read_scoped_tables(make_org):
    from django.core.management.commands.dumpdata import Command as StockDumpdata

    Agent.all_orgs.create(org=make_org(), name="x")
    with pytest.raises(CommandError, match="no active organization"):
        call_command(StockDumpdata(), "agents.Agent", stdout=io.StringIO())


def test_dumpdata_dumps_every_organization_and_loaddata_restores(make_org, tmp_path):
    a, b = make_org(), make_org()
    agents = [Agent.all_orgs.create(org=org, name=f"agent of {org.slug}") for org in (a, b)]
    tool = Tool.all_orgs.create(org=a, name="t", type=Tool.Type.API)
    AgentTool.all_orgs.create(org=a, agent=agents[0], tool=tool, tool_ref=str(tool.pk))
    out = io.StringIO()
    call_command("dumpdata", "agents", stdout=out)
    dumped = json.loads(out.getvalue())
    assert {row["pk"] for row in dumped if row["model"] == "agents.agent"} == {str(x.pk) for x in agents}
    assert current_org() is None

    fixture = tmp_path / "agents.json"
    fixture.write_text(out.getvalue())
    AgentTool.all_orgs.all().delete()
    Agent.all_orgs.all().delete()
    call_command("loaddata", str(fixture), verbosity=0)
    assert set(Agent.all_orgs.values_list("org_id", "name")) == {(x.org_id, x.name) for x in agents}
    assert AgentTool.all_orgs.get().org_id == a.pk


# --- the middleware ----------------------------------------------------------------------


def _recording_view(seen):
    def view(request):
        seen.append(current_org())
        seen.append(list(Agent.objects.values_list("name", flat=True)))
        return HttpResponse("ok")

    return view


def test_middleware_activates_the_users_organization(make_org, make_user):
    a, b = make_org(), make_org()
    Agent.all_orgs.create(org=a, name="a's")
    Agent.all_orgs.create(org=b, name="b's")
    seen = []
    middleware = OrganizationScopeMiddleware(_recording_view(seen))
    request = RequestFactory().get("/")
    request.user = make_user(a)
    assert middleware(request).status_code == 200
    assert seen == [a.pk, ["a's"]]
    assert request.org_id == a.pk
    assert current_org() is None


def test_middleware_leaves_anonymous_requests_unscoped(db):
    seen = []

    def view(request):
        seen.append(current_org())
        with pytest.raises(OrgScopeError):
            list(Agent.objects.all())
        return HttpResponse("ok")

    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    OrganizationScopeMiddleware(view)(request)
    assert seen == [None]


def test_middleware_behind_sessions_and_auth(client, make_org, make_user):
    org = make_org()
    Agent.all_orgs.create(org=org, name="visible")
    client.force_login(make_user(org))
    seen = []
    chain = SessionMiddleware(AuthenticationMiddleware(OrganizationScopeMiddleware(_recording_view(seen))))
    request = RequestFactory().get("/", HTTP_COOKIE=f"sessionid={client.cookies['sessionid'].value}")
    assert chain(request).status_code == 200
    assert seen == [org.pk, ["visible"]]


# --- async code --------------------------------------------------------------------------


def run_async(test):
    """Run an ``async def`` test on a fresh event loop (the project has no pytest-asyncio)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        async def body():
            try:
                return await test(*args, **kwargs)
            finally:
                # The async ORM ran in asgiref's worker thread: close its connection.
                await sync_to_async(connections.close_all)()

        return asyncio.run(body())

    return wrapper


@pytest.mark.django_db(transaction=True)
@run_async
async def test_the_scope_holds_in_the_async_orm(make_org):
    a, b = await sync_to_async(make_org)(), await sync_to_async(make_org)()
    await Agent.all_orgs.acreate(org=a, name="a1")
    theirs = await Agent.all_orgs.acreate(org=b, name="b1")

    with pytest.raises(OrgScopeError):
        await Agent.objects.acount()
    with pytest.raises(OrgScopeError):
        [x async for x in Agent.objects.all()]

    with org_scope(a):
        created = await Agent.objects.acreate(name="a2")
        assert created.org_id == a.pk
        assert await Agent.objects.acount() == 2
        assert await Agent.objects.filter(name__startswith="a").acount() == 2
        assert sorted([x.name async for x in Agent.objects.all()]) == ["a1", "a2"]
        assert not await Agent.objects.filter(pk=theirs.pk).aexists()
        assert await b.agents.acount() == 0
        theirs.name = "changed"
        with pytest.raises(OrgScopeError):
            await theirs.asave()
    assert current_org() is None


@pytest.mark.django_db(transaction=True)
@run_async
async def test_decorated_async_functions_and_concurrent_tasks(make_org):
    a, b = await sync_to_async(make_org)(), await sync_to_async(make_org)()
    await Agent.all_orgs.abulk_create([Agent(org=a, name="a1"), Agent(org=b, name="b1"), Agent(org=b, name="b2")])

    @org_scope(a)
    async def names_in_a():
        await asyncio.sleep(0)  # the scope must survive a suspension
        return current_org(), sorted([x.name async for x in Agent.objects.all()])

    assert await names_in_a() == (a.pk, ["a1"])
    assert current_org() is None

    started = asyncio.Event()

    async def names_in(org, wait):
        with org_scope(org):
            if wait:
                await started.wait()  # the other task runs inside its own scope meanwhile
            else:
                started.set()
            await asyncio.sleep(0)
            return current_org(), sorted([x.name async for x in Agent.objects.all()])

    results = await asyncio.gather(names_in(a, True), names_in(b, False))
    assert results == [(a.pk, ["a1"]), (b.pk, ["b1", "b2"])]


@pytest.mark.django_db(transaction=True)
@run_async
async def test_middleware_in_async_mode(make_org, make_user):
    org = await sync_to_async(make_org)()
    user = await sync_to_async(make_user)(org)
    await Agent.all_orgs.acreate(org=org, name="async view")
    seen = []

    async def view(request):
        seen.append(current_org())
        seen.append([x.name async for x in Agent.objects.all()])
        return HttpResponse("ok")

    middleware = OrganizationScopeMiddleware(view)
    assert asyncio.iscoroutinefunction(middleware)

    request = RequestFactory().get("/")

    async def auser():
        return user

    request.auser = auser
    response = await middleware(request)
    assert response.status_code == 200
    assert seen == [org.pk, ["async view"]]


# --- threads -----------------------------------------------------------------------------


def _in_thread(fn):
    """Run fn in a plain thread; return its result or the exception it raised."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            result["value"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    return result["value"]


def _names():
    try:
        return current_org(), sorted(Agent.objects.values_list("name", flat=True))
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_copied_context_carries_the_scope_into_a_thread_pool(make_org):
    a, b = make_org(), make_org()
    Agent.all_orgs.create(org=a, name="a1")
    Agent.all_orgs.create(org=b, name="b1")
    with org_scope(a), ThreadPoolExecutor(max_workers=2) as pool:
        ctx = contextvars.copy_context()
        assert pool.submit(ctx.run, _names).result() == (a.pk, ["a1"])
        # Without the copied context the worker has no organization: it fails closed.
        with pytest.raises(OrgScopeError):
            pool.submit(_names).result()


@pytest.mark.django_db(transaction=True)
def test_a_new_thread_does_not_inherit_the_scope(make_org):
    a = make_org()
    Agent.all_orgs.create(org=a, name="a1")
    with org_scope(a):
        outcome = _in_thread(_names)
    assert isinstance(outcome, OrgScopeError)


@pytest.mark.django_db(transaction=True)
def test_threads_with_different_scopes_do_not_see_each_other(make_org):
    a, b = make_org(), make_org()
    Agent.all_orgs.create(org=a, name="a1")
    Agent.all_orgs.bulk_create([Agent(org=b, name="b1"), Agent(org=b, name="b2")])
    barrier = threading.Barrier(2, timeout=30)

    def work(org):
        def run():
            with org_scope(org):
                barrier.wait()  # both scopes are active at the same time
                first = _names()
                barrier.wait()
                return first, _names()

        return run

    with ThreadPoolExecutor(max_workers=2) as pool:
        fa, fb = pool.submit(work(a)), pool.submit(work(b))
        assert fa.result() == ((a.pk, ["a1"]),) * 2
        assert fb.result() == ((b.pk, ["b1", "b2"]),) * 2
    assert current_org() is None


@pytest.mark.django_db(transaction=True)
@run_async
async def test_async_with_resolves_a_legacy_id_without_blocking(make_org, monkeypatch):
    # Another test module switches Django's async-safety check off for the session.
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)
    org = await sync_to_async(make_org)(legacy_id="org_async")
    other = await sync_to_async(make_org)()
    await Agent.all_orgs.acreate(org=org, name="mine")
    await Agent.all_orgs.acreate(org=other, name="theirs")

    async with org_scope("org_async") as active:
        assert active == org.pk
        assert [x.name async for x in Agent.objects.all()] == ["mine"]
    assert current_org() is None
    async with unscoped():
        assert await Agent.objects.acount() == 2

    @org_scope("org_async")
    async def decorated():
        return [x.name async for x in Agent.objects.all()]

    assert await decorated() == ["mine"]
    # A plain `with` would query the database from the event loop: a clear error instead.
    with pytest.raises(OrgScopeError, match="async with"):
        with org_scope("org_async"):
            pass  # pragma: no cover
    with org_scope(org.pk):  # a UUID needs no lookup
        assert await Agent.objects.acount() == 1
