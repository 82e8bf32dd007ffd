"""Attacks of the fifth round on the organization scoping, with two organizations A and B.

The model layer's write paths and relation managers, replayed from A's scope: one-to-one keys
(a user's MFA settings and preferences), an instance loaded from A whose key is then pointed at
B's row (``agent.pk = <B's>``) handed to a write as a link target, a reverse foreign key's
``add()`` (one UPDATE through the unscoped base manager), and global tables (the permission
catalog, content types) whose queries join tenant tables. Each must leave B's rows unread and
unchanged and link nothing of A's to B's, with the same outcome on every backend (on PostgreSQL
row-level security is the second wall; SQLite has no composite tenant keys).
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.core import serializers
from django.db import transaction
from django.db.models import prefetch_related_objects

from accounts.models import MFASettings, Permission, Role, User
from agentforge_agents.models import Agent
from agentforge_core.models import cross_org_links
from agentforge_core.tenancy import OrgScopeError, org_scope, unscoped
from conversations.models import Conversation
from settings_app.models import UserPreference

pytestmark = pytest.mark.django_db


def _stored(row):
    """The row as the database holds it now (every column), read as system work."""
    with unscoped():
        return type(row).all_orgs.filter(pk=row.pk).values().first()


def test_a_one_to_one_key_never_links_a_row_to_another_organizations_row(two, make_user, plant):
    a, b, mine, theirs = two
    newcomer = make_user(b, email="newcomer@b.test")
    # The link checks left one-to-one keys out: inside A's scope, A wrote an MFA row (with a TOTP
    # secret of its choosing) for B's user, which B's user.mfa read at sign-in (no organization
    # active yet). SQLite stored it; the composite tenant keys refused it on MariaDB and PostgreSQL.
    writes = {
        "create": lambda: MFASettings.objects.create(user=newcomer, totp_secret="CHOSEN-BY-A"),
        "create by key": lambda: UserPreference.objects.create(user_id=newcomer.pk),
        "update": lambda: MFASettings.objects.filter(pk=mine["mfasettings"].pk).update(user=newcomer),
        "bulk_update": lambda: MFASettings.objects.bulk_update(
            [MFASettings(pk=mine["mfasettings"].pk, org=a, user_id=newcomer.pk)], ["user"]
        ),
    }
    for name, write in writes.items():
        with org_scope(a), pytest.raises(OrgScopeError, match="organization"), transaction.atomic():
            write()
        assert MFASettings.all_orgs.filter(user=newcomer).count() == 0, name
        assert UserPreference.all_orgs.filter(user=newcomer).count() == 0, name
    # And cross_org_links() (import_json's report, audits) lists such a link stored around the checks.
    plant(MFASettings, mine["mfasettings"], user_id=newcomer.pk)
    assert [(field.name, pk, target) for _m, field, pk, _l, target in cross_org_links([MFASettings])] == [
        ("user", mine["mfasettings"].pk, newcomer.pk)
    ]


def test_an_instance_whose_key_names_another_organizations_row_is_no_link_target(two):
    a, b, mine, theirs = two
    # The link checks took a loaded target's organization from the instance in hand: A's agent
    # with its key pointed at B's (``agent.pk = request_data["id"]``), or an instance made with
    # from_db(), still said A, so A's conversations were linked to B's agent (SQLite; the
    # composite tenant keys refused it on MariaDB, and on PostgreSQL at COMMIT).
    with org_scope(a):
        repointed = Agent.objects.get(pk=mine["agent"].pk)
        repointed.pk = theirs["agent"].pk
        made = Agent.from_db("default", ["id", "org_id"], [theirs["agent"].pk, a.pk])
        conversation = Conversation.objects.get(pk=mine["conversation"].pk)
    for agent in (repointed, made):
        writes = {
            "create": lambda: Conversation.objects.create(agent=agent, title="x"),
            "bulk_create": lambda: Conversation.objects.bulk_create([Conversation(agent=agent, title="x")]),
            "update": lambda: Conversation.objects.update(agent=agent),
            "save": lambda: setattr(conversation, "agent", agent) or conversation.save(),
        }
        for name, write in writes.items():
            with org_scope(a), pytest.raises(OrgScopeError, match="organization"), transaction.atomic():
                write()
            assert list(Conversation.all_orgs.filter(agent=theirs["agent"].pk)) == [theirs["conversation"]], name


def test_a_reverse_add_never_changes_or_links_another_organizations_row(two):
    a, b, mine, theirs = two
    before = {name: _stored(theirs[name]) for name in ("conversation", "agent")}
    # agent.conversations.add(row) is one UPDATE by key through the unscoped base manager: B's
    # conversation in hand (loaded by system work, or made with from_db()) was linked to A's agent, and a.agents.add(B's
    # agent) moved it into A, on SQLite (the composite tenant keys refused the link on MariaDB;
    # on PostgreSQL row-level security updated nothing, silently).
    with org_scope(a):
        agent = Agent.objects.get(pk=mine["agent"].pk)
        their_conversation = Conversation.from_db("default", ["id", "org_id"], [theirs["conversation"].pk, a.pk])
        their_agent = Agent.from_db("default", ["id", "org_id"], [theirs["agent"].pk, a.pk])
        my_conversation = Conversation.objects.get(pk=mine["conversation"].pk)
    changes = {
        "add": lambda: agent.conversations.add(their_conversation),
        "set": lambda: agent.conversations.set([their_conversation]),
        "aadd": lambda: async_to_sync(agent.conversations.aadd)(their_conversation),
        "add B's loaded row": lambda: agent.conversations.add(theirs["conversation"]),
        "move into A": lambda: a.agents.add(theirs["agent"]),
        "link to B's": lambda: their_agent.conversations.add(my_conversation),
        "move to B": lambda: b.conversations.add(my_conversation),
    }
    for name, change in changes.items():
        with org_scope(a), pytest.raises(OrgScopeError, match="organization"), transaction.atomic():
            change()
        assert {name: _stored(theirs[name]) for name in ("conversation", "agent")} == before, name
        assert _stored(mine["conversation"])["agent_id"] == mine["agent"].pk, name
    with unscoped(), pytest.raises(OrgScopeError, match="belongs to organization"), transaction.atomic():
        theirs["agent"].conversations.add(my_conversation)  # system work links nothing either
    with org_scope(a):  # A's own rows
        new = Conversation.objects.create(title="new")
        agent.conversations.add(new)
    assert _stored(new)["agent_id"] == mine["agent"].pk


def test_a_global_tables_joins_into_tenant_tables_stay_in_the_active_organization(two):
    from django.contrib.auth.models import Permission as DjangoPermission

    a, b, mine, theirs = two
    change_tool = DjangoPermission.objects.get(codename="change_tool")
    theirs["user"].user_permissions.add(change_tool)
    # The permission catalogs are global tables, so their managers were not scoped and neither
    # were the tenant tables their queries join: inside A's scope they read B's role names and
    # told which of B's users hold a permission (SQLite, MariaDB; row-level security hid B's
    # rows on PostgreSQL).
    with org_scope(a):
        assert list(Permission.objects.filter(pk=mine["permission"].pk).values_list("roles__name", flat=True)) == [
            mine["role"].name
        ]
        assert not Permission.objects.filter(roles__name=theirs["role"].name).exists()
        # exclude() across the relation runs a subquery of its own (NOT EXISTS ...): held too.
        assert Permission.objects.filter(pk=mine["permission"].pk).exclude(roles__name=theirs["role"].name).exists()
        assert not DjangoPermission.objects.filter(user__email=theirs["user"].email).exists()
        assert list(mine["role"].permissions.all()) == [mine["permission"]]
    with unscoped():  # system work joins every organization's rows
        assert Permission.objects.filter(roles__name=theirs["role"].name).exists()
        assert not Permission.objects.filter(pk=mine["permission"].pk).exclude(roles__name=theirs["role"].name).exists()
        assert DjangoPermission.objects.filter(user__email=theirs["user"].email).exists()
    # With no organization active (authentication reads the catalogs), every row, as before.
    assert DjangoPermission.objects.filter(user=theirs["user"]).get() == change_tool


def _loaded_conversation(org, user):
    return json.dumps(
        [
            {
                "model": "conversations.conversation",
                "fields": {"org": str(org.pk), "user": str(user.pk), "title": "loaded"},
            }
        ]
    )


def test_deserializing_never_writes_into_another_organization_nor_links_to_it(two):
    a, b, mine, theirs = two
    # A deserialized object (loaddata, serializers.deserialize()) is saved through
    # Model.save_base() directly, around the models' save() and its checks: inside A's scope a
    # conversation was written into B (SQLite, MariaDB) and A's was linked to B's user (SQLite);
    # row-level security and the composite tenant keys refused them on PostgreSQL.
    for data in (_loaded_conversation(b, theirs["user"]), _loaded_conversation(a, theirs["user"])):
        with org_scope(a), pytest.raises(OrgScopeError, match="organization"), transaction.atomic():
            for loaded in serializers.deserialize("json", data):
                loaded.save()
        assert not Conversation.all_orgs.filter(title="loaded").exists()
    with org_scope(a):
        for loaded in serializers.deserialize("json", _loaded_conversation(a, mine["user"])):
            loaded.save()
    assert Conversation.all_orgs.get(title="loaded").org_id == a.pk


def test_the_scoped_user_manager_names_no_user_of_another_organization_by_natural_key(two):
    a, b, mine, theirs = two
    # User.objects.get_by_natural_key(email, org) read through all_orgs: inside A's scope it
    # handed over B's user (password hash included), and a natural key being deserialized
    # resolved to B's user (SQLite, MariaDB; row-level security hid it on PostgreSQL).
    key = [theirs["user"].email, str(b.pk)]
    with org_scope(a):
        with pytest.raises(User.DoesNotExist):
            User.objects.get_by_natural_key(*key)
        with pytest.raises(serializers.base.DeserializationError, match="does not exist"):
            data = json.loads(_loaded_conversation(a, mine["user"]))
            data[0]["fields"]["user"] = key
            list(serializers.deserialize("json", json.dumps(data)))
        assert User.objects.get_by_natural_key(mine["user"].email, a) == mine["user"]
    with unscoped():
        assert User.objects.get_by_natural_key(*key) == theirs["user"]
    assert User.objects.get_by_natural_key(*key) == theirs["user"]  # no organization yet: sign-in


def test_an_instance_keyed_to_another_organizations_row_reads_none_of_its_permissions(two):
    a, b, mine, theirs = two
    # The permission helpers read the grants through all_orgs by the instance's key: A's role or
    # user pointed at B's (``role.pk = <B's>``) read the permission strings of B's role and of
    # B's user's roles (SQLite, MariaDB; row-level security hid them on PostgreSQL).
    with org_scope(a):
        role = Role.objects.get(pk=mine["role"].pk)
        user = User.objects.get(pk=mine["user"].pk)
        assert role.effective_permissions() == user.effective_permissions() == {"agents:read"}
        role.pk, user.pk = theirs["role"].pk, theirs["user"].pk
        assert role.effective_permissions() == set()
        assert user.effective_permissions() == set()
    with org_scope(b):  # B's own
        assert Role.objects.get(pk=theirs["role"].pk).effective_permissions() == {"agents:read"}


def test_a_join_table_without_organization_never_changes_or_shows_another_organizations_links(two):
    from django.contrib.auth.models import Permission as DjangoPermission

    a, b, mine, theirs = two
    change, delete = (DjangoPermission.objects.get(codename=f"{verb}_tool") for verb in ("change", "delete"))
    with unscoped():
        theirs["user"].user_permissions.add(delete)

    def their_permissions():
        with unscoped():
            return set(User.all_orgs.get(pk=theirs["user"].pk).user_permissions.all())

    # users.user_permissions is a join table with no organization: neither the link checks nor
    # row-level security saw it. Inside A's scope, B's user was granted or stripped of admin
    # permissions by its key or through A's user pointed at B's key, and that user's list read
    # B's user's permissions, on every backend.
    with org_scope(a):
        repointed = User.objects.get(pk=mine["user"].pk)
        repointed.pk = theirs["user"].pk
        assert list(repointed.user_permissions.all()) == []
        changes = {
            "grant by key": lambda: change.user_set.add(theirs["user"].pk),
            "strip by key": lambda: delete.user_set.remove(theirs["user"].pk),
            "grant": lambda: repointed.user_permissions.add(change),
            "strip": lambda: repointed.user_permissions.clear(),
            "replace": lambda: repointed.user_permissions.set([change]),
        }
        for name, write in changes.items():
            with pytest.raises(OrgScopeError, match="another organization"), transaction.atomic():
                write()
            assert their_permissions() == {delete}, name
        prefetch_related_objects([repointed], "user_permissions")
        assert list(repointed.user_permissions.all()) == []
        mine["user"].user_permissions.add(change)  # A's own
        assert list(change.user_set.all()) == [mine["user"]]
    with unscoped():  # system work
        change.user_set.add(theirs["user"].pk)
    assert their_permissions() == {change, delete}


def test_a_global_tables_rows_are_not_reached_through_an_instance_pointed_at_another_organizations_row(two):
    from django.contrib.admin.models import ADDITION, LogEntry

    a, b, mine, theirs = two
    with unscoped():
        entry = LogEntry.objects.create(
            user=theirs["user"], object_id="x", object_repr="their-change-XYZZY-12", action_flag=ADDITION
        )
    # The admin's log is a global table: its reverse accessor from a user (user.logentry_set),
    # on A's user pointed at B's key, read B's user's entries on every backend.
    with org_scope(a):
        repointed = User.objects.get(pk=mine["user"].pk)
        repointed.pk = theirs["user"].pk
        assert list(repointed.logentry_set.all()) == []
        prefetch_related_objects([repointed], "logentry_set")
        assert list(repointed.logentry_set.all()) == []
    with org_scope(b):
        assert list(User.objects.get(pk=theirs["user"].pk).logentry_set.all()) == [entry]
