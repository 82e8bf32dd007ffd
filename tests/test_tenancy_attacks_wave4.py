"""Attacks of the fourth round on the organization scoping, with two organizations A and B.

The earlier rounds closed the querysets, the links between rows and the instance paths. These
replay what an application bug or another organization's admin reaches around them: Django's own
reads through the unscoped base manager (foreign-key validation, deletion cascades and the admin's
delete page, content types), subqueries and prefetches built from ``all_orgs`` inside a scoped
statement, get_or_create/update_or_create/in_bulk/bulk_update with B's keys, expressions and
updates across a planted link, iterators, generators and tasks that outlive or share a scope. From
A's scope each must leave B's rows unread and unchanged, with the same outcome on every backend (on
PostgreSQL row-level security is the second wall).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.db.models import (
    Count,
    Exists,
    F,
    FilteredRelation,
    OuterRef,
    Prefetch,
    Q,
    Subquery,
    prefetch_related_objects,
)
from django.urls import reverse

from accounts.models import GroupRole, Organization, User
from agentforge_agents.models import Agent, AgentTool, Tool
from agentforge_core.models import scope_field
from agentforge_core.tenancy import OrgScopeError, current_org, org_scope, unscoped
from conversations.models import Conversation, Message
from tests.admin_support import admin_world, plant_their_message

pytestmark = pytest.mark.django_db


def _stored(row):
    """The row as the database holds it now (every column), read as system work."""
    with unscoped():
        return type(row).all_orgs.filter(pk=row.pk).values().first()


def _validation_errors(instance):
    try:
        instance.full_clean()
    except ValidationError as error:
        return error.message_dict
    return {}


# --- 1. foreign-key validation (full_clean, a ModelForm without the field) ---------------------


def test_validating_a_key_of_another_organizations_row_answers_as_for_a_missing_row(two):
    a, b, mine, theirs = two
    # ForeignKey.validate() looked the target up through the unscoped base manager: B's agent
    # passed where a key of no row failed, so full_clean() (an API's validation) told A which of
    # B's keys exist. On PostgreSQL row-level security hid the row.
    with org_scope(a):
        for key in (theirs["agent"].pk, uuid.uuid4()):
            errors = _validation_errors(Conversation(org=a, agent_id=key, title="chat"))
            assert errors == {"agent": [f"agent instance with id {key!r} is not a valid choice."]}
        errors = _validation_errors(Conversation(org=a, user_id=theirs["user"].pk, title="chat"))
        assert list(errors) == ["user"]
        assert _validation_errors(Conversation(org=a, agent_id=mine["agent"].pk, user_id=mine["user"].pk)) == {}
    with unscoped():  # system work validates against every organization
        assert _validation_errors(Conversation(org=b, agent_id=theirs["agent"].pk, title="chat")) == {}


def test_every_foreign_key_to_a_tenant_table_validates_inside_the_active_organization():
    # The class, not the one field: a new model's foreign key gets the held validation too.
    unheld = [
        f"{model._meta.label}.{field.name}"
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, models.ForeignKey)
        and scope_field(field.related_model) is not None
        and type(field).validate is models.ForeignKey.validate
    ]
    assert unheld == []


# --- 2. all_orgs inside a scoped statement: subqueries and prefetches ---------------------------


UNSCOPED_INSIDE_SCOPED = {
    "Subquery": lambda b: Agent.objects.annotate(
        leak=Subquery(Tool.all_orgs.filter(org=b).values("name")[:1])
    ).values_list("leak", flat=True),
    "Exists": lambda b: Agent.objects.filter(Exists(Tool.all_orgs.filter(org=b, name__startswith="Mailer"))),
    "pk__in": lambda b: User.objects.filter(pk__in=User.all_orgs.filter(org=b).values("pk")),
    "base manager": lambda b: Agent.objects.filter(
        Exists(Conversation._base_manager.filter(agent=OuterRef("pk"), org=b))
    ),
    "alias": lambda b: Agent.objects.alias(their=Subquery(Tool.all_orgs.filter(org=b).values("name")[:1])).filter(
        their__startswith="Mailer"
    ),
    "order_by": lambda b: Agent.objects.order_by(Subquery(Tool.all_orgs.filter(org=b).values("name")[:1])),
    "update SET": lambda b: [Agent.objects.update(name=Subquery(Tool.all_orgs.filter(org=b).values("name")[:1]))],
    "aggregate": lambda b: Agent.objects.values_list("pk").annotate(
        n=Subquery(Tool.all_orgs.filter(org=b).values("org").annotate(n=Count("pk")).values("n"))
    ),
}


@pytest.mark.parametrize("attempt", sorted(UNSCOPED_INSIDE_SCOPED))
def test_an_unscoped_subquery_in_a_scoped_statement_is_refused_in_every_scope(two, attempt):
    a, b, mine, theirs = two
    # B's tool names read into A's results on SQLite and MariaDB; only A's rows on PostgreSQL.
    for scope in (org_scope(a), unscoped()):
        with scope, pytest.raises(OrgScopeError, match="not organization-scoped"):
            list(UNSCOPED_INSIDE_SCOPED[attempt](b))


def test_scoped_subqueries_stay_and_system_work_keeps_all_orgs_subqueries(two):
    a, b, mine, theirs = two
    with org_scope(a):
        names = Agent.objects.annotate(tool=Subquery(Tool.objects.order_by("name").values("name")[:1]))
        assert list(names.values_list("tool", flat=True)) == [mine["tool"].name]
        assert list(User.objects.filter(pk__in=User.objects.values("pk"))) == [mine["user"]]
    with unscoped():
        everyone = Agent.all_orgs.filter(Exists(Tool.all_orgs.filter(org=OuterRef("org"))))
        assert set(everyone.values_list("pk", flat=True)) == {mine["agent"].pk, theirs["agent"].pk}


def test_a_prefetch_with_an_unscoped_queryset_is_refused_on_a_scoped_queryset(two, plant):
    a, b, mine, theirs = two
    plant(AgentTool, AgentTool.all_orgs.get(agent=mine["agent"]), tool_id=theirs["tool"].pk)
    # Through a planted link A's agent reached B's tool (its credentials) on SQLite and MariaDB.
    for lookup in (Prefetch("tools", queryset=Tool.all_orgs.all()), Prefetch("tools", Tool.all_orgs.all(), "t")):
        with org_scope(a), pytest.raises(OrgScopeError, match="not organization-scoped"):
            Agent.objects.prefetch_related(lookup)
    with org_scope(a):
        (agent,) = Agent.objects.prefetch_related(Prefetch("tools", queryset=Tool.objects.all(), to_attr="t"))
        assert agent.t == []


def test_prefetch_related_objects_called_directly_refuses_an_unscoped_queryset_too(two, plant):
    a, b, mine, theirs = two
    plant(AgentTool, AgentTool.all_orgs.get(agent=mine["agent"]), tool_id=theirs["tool"].pk)
    # The check above sits in QuerySet.prefetch_related(); prefetch_related_objects() on loaded
    # instances went around it and handed A B's tool on SQLite and MariaDB.
    lookups = (
        Prefetch("tools", queryset=Tool.all_orgs.all()),
        Prefetch("tools", Tool.all_orgs.all(), "t"),
        Prefetch("agent_tools__tool", queryset=Tool.all_orgs.all()),  # the queryset at a deeper level
    )
    for lookup in lookups:
        with org_scope(a):
            agent = Agent.objects.get(pk=mine["agent"].pk)
            with pytest.raises(OrgScopeError, match=r"^prefetch_related_objects\(Prefetch\(.*not organization-scoped"):
                prefetch_related_objects([agent], lookup)
    with org_scope(a):
        agent = Agent.objects.get(pk=mine["agent"].pk)
        prefetch_related_objects([agent], Prefetch("tools", queryset=Tool.objects.all(), to_attr="t"))
        assert agent.t == []
    with unscoped():  # system work: every organization, deliberately
        agent = Agent.all_orgs.get(pk=mine["agent"].pk)
        prefetch_related_objects([agent], Prefetch("tools", queryset=Tool.all_orgs.all(), to_attr="t"))
        assert agent.t == [theirs["tool"]]


def test_an_org_admins_group_list_never_names_another_organizations_role(client, make_org, make_user, plant):
    world = admin_world(make_org, make_user)
    mine, theirs = world["mine"], world["theirs"]
    with unscoped():
        link = GroupRole.all_orgs.create(org=world["org"], group=mine["group"], role=mine["role"])
    plant(GroupRole, link, role_id=theirs["role"].pk)
    # The group list prefetched its roles through Role.all_orgs: a planted link showed B's role.
    client.force_login(world["orgadmin"])
    page = client.get(reverse("admin:accounts_group_changelist")).content.decode()
    assert mine["group"].name in page
    assert theirs["role"].name not in page


def test_neighbours_by_date_and_explain_stay_in_the_active_organization(two):
    a, b, mine, theirs = two
    # get_next_by_<date>() goes through the default manager: B's agent, made later, is no neighbour.
    with org_scope(a), pytest.raises(Agent.DoesNotExist):
        Agent.objects.get(pk=mine["agent"].pk).get_next_by_created_at()
    with org_scope(b):
        later = Agent.objects.create(name="Later-g")
        assert Agent.objects.get(pk=theirs["agent"].pk).get_next_by_created_at() == later
    with pytest.raises(OrgScopeError, match="no active organization"):
        Agent.objects.explain()


# --- 3. get_or_create, update_or_create, in_bulk with B's keys --------------------------------


@pytest.mark.parametrize("method", ["get_or_create", "update_or_create"])
def test_get_or_create_with_another_organizations_key_changes_nothing(two, method):
    a, b, mine, theirs = two
    before = _stored(theirs["agent"])
    # The scoped get finds nothing; the create collides with B's primary key: refused by the
    # database, B's row neither read nor changed.
    with org_scope(a), pytest.raises(IntegrityError), transaction.atomic():
        getattr(Agent.objects, method)(pk=theirs["agent"].pk, defaults={"name": "pwned"})
    assert _stored(theirs["agent"]) == before
    with org_scope(a):
        agent, created = getattr(Agent.objects, method)(pk=mine["agent"].pk, defaults={"name": "renamed"})
    assert (agent.pk, created) == (mine["agent"].pk, False)


def test_in_bulk_finds_only_the_active_organizations_rows(two):
    a, b, mine, theirs = two
    with org_scope(a):
        assert Agent.objects.in_bulk([theirs["agent"].pk, mine["agent"].pk]) == {mine["agent"].pk: mine["agent"]}
        assert Organization.objects.in_bulk([b.pk]) == {}
        assert Organization.objects.in_bulk([b.slug, a.slug], field_name="slug") == {a.slug: a}


# --- 4. expressions and updates across a planted link ----------------------------------------


def test_expressions_across_a_planted_link_read_nothing_of_the_other_organization(two, plant):
    a, b, mine, theirs = two
    plant(AgentTool, AgentTool.all_orgs.get(agent=mine["agent"]), tool_id=theirs["tool"].pk)
    with org_scope(a):
        # (What a LEFT JOIN to the hidden row gives, NULL or no row, differs with row-level security.)
        assert AgentTool.objects.annotate(name=F("tool__name")).filter(name=theirs["tool"].name).count() == 0
        assert AgentTool.objects.aggregate(n=Count("tool__name")) == {"n": 0}
        filtered = Agent.objects.annotate(t=FilteredRelation("tools", condition=Q(tools__name__endswith="-g")))
        assert filtered.filter(t__name=theirs["tool"].name).count() == 0
        assert Agent.objects.filter(Exists(Tool.objects.filter(agents=OuterRef("pk")))).count() == 0


def test_an_update_filtered_across_a_planted_link_changes_nothing(two, plant):
    a, b, mine, theirs = two
    plant(AgentTool, AgentTool.all_orgs.get(agent=mine["agent"]), tool_id=theirs["tool"].pk)
    with org_scope(a):
        assert Agent.objects.filter(tools__name=theirs["tool"].name).update(name="found") == 0
        assert Agent.objects.filter(tools__name=theirs["tool"].name).delete() == (0, {})
    assert _stored(mine["agent"])["name"] == mine["agent"].name


# --- 5. scopes: iterators, exceptions, async ---------------------------------------------------


def test_an_iterator_made_in_a_scope_runs_in_the_scope_it_is_read_in(two):
    a, b, mine, theirs = two
    with org_scope(b):
        rows = Agent.objects.values_list("name", flat=True).iterator()
    with pytest.raises(OrgScopeError, match="no active organization"):
        next(rows)
    with org_scope(b):
        later = Agent.objects.values_list("name", flat=True).iterator()
    with org_scope(a):
        assert list(later) == [mine["agent"].name]


def test_an_exception_inside_a_scope_restores_the_outer_one(two):
    a, b, mine, theirs = two
    with org_scope(a):
        with pytest.raises(ZeroDivisionError), org_scope(b):
            1 / 0
        assert current_org() == a.pk
        with pytest.raises(OrgScopeError), org_scope("no-such-organization"):
            pass
        assert current_org() == a.pk
    assert current_org() is None


def test_async_code_carries_the_scope_and_tasks_do_not_share_it(two):
    a, b, mine, theirs = two

    @sync_to_async
    def org_in_the_worker_thread():
        return current_org()

    async def in_scope(org):
        async with org_scope(org):
            await asyncio.sleep(0)  # the other task runs in between
            return await org_in_the_worker_thread()

    async def main():
        return await asyncio.gather(in_scope(a), in_scope(b), org_in_the_worker_thread())

    # The worker thread sees the awaiting task's scope, each task its own, no task none.
    assert asyncio.run(main()) == [a.pk, b.pk, None]
    assert current_org() is None


def test_a_generator_suspended_inside_its_scope_leaves_no_organization_active(two):
    a, b, mine, theirs = two

    def their_agents():
        with org_scope(b):
            yield from Agent.objects.values_list("name", flat=True)
            yield "done"

    # The caller's code runs in B's scope while the generator is suspended (that much is the
    # generator's doing); once the caller's block ends, the generator's closing restored A's
    # scope with no block open: code after it (the thread's next request) read A's rows.
    rows = their_agents()
    with pytest.raises(OrgScopeError, match="still open"), org_scope(a):
        assert next(rows) == theirs["agent"].name
    assert current_org() is None
    rows.close()
    assert current_org() is None
    with pytest.raises(OrgScopeError, match="no active organization"):
        list(Agent.objects.all())
    with org_scope(a):  # consumed inside the block, the generator's scope nests as any other
        assert list(their_agents()) == [theirs["agent"].name, "done"]
        assert current_org() == a.pk


# --- 6. deletion cascades ----------------------------------------------------------------------


def test_a_deletion_cascade_never_changes_or_deletes_another_organizations_rows(two, plant):
    a, b, mine, theirs = two
    their_message = Message.all_orgs.filter(conversation=theirs["conversation"]).first()
    # Links between organizations the importer's bulk writer or an old writer left (SQLite has no
    # composite tenant keys): Django's deletion collects the rows to cascade into through the
    # unscoped base manager, so deleting A's agent set B's conversation's agent to NULL and
    # deleting A's conversation deleted B's message.
    plant(Conversation, theirs["conversation"], agent_id=mine["agent"].pk)
    plant(Message, their_message, conversation_id=mine["conversation"].pk)
    before = {
        name: _stored(row) for name, row in (("conversation", theirs["conversation"]), ("message", their_message))
    }
    for row in (mine["agent"], mine["conversation"]):
        # The rows left pointing at the deleted one are refused by the database's foreign key
        # (at COMMIT where it is deferred), as on PostgreSQL, whose row-level security hides them.
        with org_scope(a), pytest.raises(IntegrityError), transaction.atomic():
            type(row).objects.get(pk=row.pk).delete()
            connection.check_constraints()
    assert {
        name: _stored(row) for name, row in (("conversation", theirs["conversation"]), ("message", their_message))
    } == before


def test_deleting_through_all_orgs_still_cascades_for_system_work(two):
    a, b, mine, theirs = two
    with unscoped():
        assert Agent.all_orgs.filter(pk=theirs["agent"].pk).delete()[1]["agents.Agent"] == 1
        assert Conversation.all_orgs.get(pk=theirs["conversation"].pk).agent_id is None
    with org_scope(a):  # an all_orgs queryset's cascade inside a scope reaches the active organization's rows
        assert Conversation.all_orgs.filter(pk=mine["conversation"].pk).delete()[1]["conversations.Message"] == 2
    assert _stored(mine["conversation"]) is None


def test_a_content_type_hands_over_no_row_of_another_organization_by_its_key(two):
    a, b, mine, theirs = two
    # What a GenericForeignKey, the admin's "view on site" shortcut and LogEntry.get_edited_object()
    # read through: the model's base manager, by key.
    content_type = ContentType.objects.get_for_model(Tool)
    with org_scope(a):
        with pytest.raises(Tool.DoesNotExist):
            content_type.get_object_for_this_type(pk=theirs["tool"].pk)
        assert content_type.get_object_for_this_type(pk=mine["tool"].pk) == mine["tool"]
        assert list(content_type.get_all_objects_for_this_type(name__startswith="Mailer")) == [mine["tool"]]
    with unscoped():
        assert content_type.get_object_for_this_type(pk=theirs["tool"].pk) == theirs["tool"]


def test_an_org_admins_delete_page_never_lists_another_organizations_rows(client, make_org, make_user, plant):
    world = admin_world(make_org, make_user)
    mine = world["mine"]
    plant_their_message(world, plant, "their-words-XYZZY-11")
    # The confirmation page lists what the delete cascades into, collected as the delete does:
    # B's message linked to A's conversation was collected, and named as a row the admin may not delete.
    client.force_login(world["orgadmin"])
    url = reverse("admin:conversations_conversation_delete", args=[mine["conversation"].pk])
    page = client.get(url).content.decode()
    assert mine["conversation"].title in page
    assert "<li>Messages: 2</li>" in page  # A's two
    assert "their-words-XYZZY-11" not in page
    assert "<li>message</li>" not in page


# PostgreSQL's composite tenant keys refuse the planted link itself at its COMMIT: no row holds one there.
@pytest.mark.backends("sqlite", "mysql")
@pytest.mark.django_db(transaction=True)  # SQLite's foreign key refuses at COMMIT
def test_an_org_admins_delete_refused_by_another_organizations_link_is_a_message_not_a_server_error(
    client, make_org, make_user, plant
):
    from django.contrib.admin.models import LogEntry
    from django.contrib.messages import get_messages

    world = admin_world(make_org, make_user)
    mine = world["mine"]
    their_message = plant_their_message(world, plant)
    before = _stored(their_message)
    client.force_login(world["orgadmin"])
    conversation = mine["conversation"]
    delete = reverse("admin:conversations_conversation_delete", args=[conversation.pk])
    changelist = reverse("admin:conversations_conversation_changelist")
    attempts = [
        (delete, {"post": "yes"}, reverse("admin:conversations_conversation_change", args=[conversation.pk]), "was"),
        (
            changelist,
            {"action": "delete_selected", "_selected_action": [conversation.pk], "post": "yes"},
            changelist,
            "were",
        ),
    ]
    for url, form, back_to, verb in attempts:
        response = client.post(url, form, follow=True)
        # It was a 500 (IntegrityError out of the view); now the page again, with why (and not
        # the "deleted successfully" Django wrote before the COMMIT that refused).
        assert (response.status_code, response.redirect_chain) == (200, [(back_to, 302)])
        assert [str(m) for m in get_messages(response.wsgi_request)] == [
            f"The conversation{'s' if verb == 'were' else ''} {verb} not deleted: rows outside your organization "
            "still refer to " + ("it" if verb == "was" else "them") + " (links between organizations, which "
            "import_json reports as \u201corganization links\u201d). Point those rows elsewhere first."
        ]
        assert _stored(conversation) is not None
        assert Message.all_orgs.filter(conversation_id=conversation.pk).count() == 3  # A's two and the planted one
        assert _stored(their_message) == before
        assert not LogEntry.objects.filter(action_flag=3).exists()  # no deletion logged for what was kept


def test_bulk_update_of_an_instance_keyed_to_another_organizations_row_updates_nothing(two):
    a, b, mine, theirs = two
    before = _stored(theirs["tool"])
    with org_scope(a):  # the organization filled in is A's, the key is B's row
        assert Tool.objects.bulk_update([Tool(pk=theirs["tool"].pk, org=a, name="pwned")], ["name"]) == 0
    assert _stored(theirs["tool"]) == before
