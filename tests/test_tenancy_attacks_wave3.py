"""Attacks of the third round on the organization scoping, with two organizations A and B.

The first two rounds closed the querysets (joins, raw SQL, exclude(), prefetches) and the
links between rows. These replay what reaches a row by its primary key without a queryset
of ours: Django's instance paths (refresh_from_db, save's UPDATE, delete, the audit trail's
read of the old row), an upsert, the user model's bulk writes and set operations (union,
intersection, difference). From A's scope each must leave B's rows unread and unchanged,
with the same outcome on every backend (on PostgreSQL row-level security is the second wall).
"""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, connection, transaction

from accounts.models import Organization, User
from agentforge_agents.models import Agent, Tool
from agentforge_core.tenancy import OrgScopeError, org_scope, unscoped
from security.models import AuditLog
from tests.admin_support import populate

pytestmark = pytest.mark.django_db

# Rows of populate() that belong to no organization (the permission catalog) or are
# append-only (the audit trail: no delete, no update, whoever asks).
NOT_TENANT_ROWS = {"permission", "auditlog"}


def _tenant_rows(rows):
    return {name: row for name, row in rows.items() if name not in NOT_TENANT_ROWS}


def _stored(row):
    """The row as the database holds it now (every column), read as system work."""
    model = type(row)
    manager = getattr(model, "all_orgs", None) or model._base_manager
    with unscoped():
        return manager.filter(pk=row.pk).values().first()


def _snapshot(rows):
    return {name: _stored(row) for name, row in rows.items()}


# --- 1. instance paths: refresh_from_db, save's UPDATE, delete ---------------------------------


def test_refresh_from_db_never_loads_another_organizations_row(two):
    a, b, mine, theirs = two
    # The instance names B's row by its key alone; refresh_from_db() reads through the
    # base manager, which must not hand over B's columns (a tool's decrypted credentials,
    # an audit entry).
    for name, row in theirs.items():
        if name == "permission":  # the global catalog
            continue
        with org_scope(a), pytest.raises(ObjectDoesNotExist):
            type(row)(pk=row.pk).refresh_from_db()
    with org_scope(a):  # A's own rows still refresh
        tool = Tool(pk=mine["tool"].pk)
        tool.refresh_from_db()
        assert tool.name == mine["tool"].name
    with org_scope(b):
        tool = Tool(pk=theirs["tool"].pk)
        tool.refresh_from_db()
        assert tool.credentials == theirs["tool"].credentials


def test_deleting_another_organizations_row_by_its_key_is_refused(two):
    a, b, mine, theirs = two
    before = _snapshot(theirs)
    # Model(pk=...).delete(), the delete-without-loading idiom: the organization is filled
    # in from the scope (A), and Django deletes by primary key whatever the row's is.
    for name, row in _tenant_rows(theirs).items():
        with org_scope(a), pytest.raises(OrgScopeError, match="another organization"), transaction.atomic():
            type(row)(pk=row.pk).delete()
    with org_scope(a), pytest.raises(OrgScopeError, match="another organization"), transaction.atomic():
        loaded = Tool.objects.get(pk=mine["tool"].pk)
        loaded.pk = theirs["tool"].pk  # a loaded instance pointed at B's row
        loaded.delete()
    assert _snapshot(theirs) == before
    with org_scope(a):  # A's own rows still delete
        Agent(pk=mine["agent"].pk).delete()
    assert _stored(mine["agent"]) is None


def test_saving_an_instance_keyed_to_another_organizations_row_updates_nothing(two):
    a, b, mine, theirs = two
    before = _snapshot(theirs)
    attempts = {
        "tool": lambda: Tool(pk=theirs["tool"].pk, name="pwned", type=Tool.Type.EMAIL).save(force_update=True),
        "user": lambda: User(pk=theirs["user"].pk, email="pwned@a.test").save(force_update=True),
        "organization": lambda: Organization(pk=b.pk, name="pwned", slug="pwned").save(force_update=True),
    }
    for name, attempt in attempts.items():
        with org_scope(a), pytest.raises(DatabaseError, match="did not affect any rows"), transaction.atomic():
            attempt()
    with org_scope(a), pytest.raises(DatabaseError, match="did not affect any rows"), transaction.atomic():
        agent = Agent.objects.get(pk=mine["agent"].pk)
        agent.pk = theirs["agent"].pk
        agent.name = "pwned"
        agent.save(update_fields=["name"])
    assert _snapshot(theirs) == before


@pytest.mark.django_db(transaction=True)  # autocommit, as in a request: the entry outlives the failed save
def test_the_audit_trail_never_records_another_organizations_row(two):
    a, b, mine, theirs = two
    marker = "their-description-XYZZY-10"
    with unscoped():
        Tool.all_orgs.filter(pk=theirs["tool"].pk).update(description=marker)
    # django-auditlog diffs an update against the stored row, read through the base manager
    # by primary key before the UPDATE runs: a loaded instance pointed at B's row wrote B's
    # columns into A's (append-only) audit trail, though the UPDATE itself changed nothing.
    with org_scope(a), pytest.raises(DatabaseError, match="did not affect any rows"):
        tool = Tool.objects.get(pk=mine["tool"].pk)
        tool.pk = theirs["tool"].pk
        tool.description = "changed"
        tool.save(update_fields=["description"])
    with unscoped():
        entries = list(AuditLog.all_orgs.filter(action=AuditLog.Action.UPDATE).values_list("org_id", "changes"))
    assert [org_id for org_id, changes in entries if marker in json.dumps(changes)] == []
    assert _stored(theirs["tool"])["description"] == marker


# --- 2. bulk writes: an upsert into another organization's row, the user model --------------


def _upsert(model, objs, unique_fields):
    kwargs = {"update_conflicts": True, "update_fields": ["name"]}
    if connection.features.supports_update_conflicts_with_target:
        kwargs["unique_fields"] = unique_fields
    # MySQL/MariaDB take no conflict target: any unique key (the primary key here) decides.
    return model.objects.bulk_create(objs, **kwargs)


def test_an_upsert_never_overwrites_another_organizations_row(two):
    a, b, mine, theirs = two
    before = _snapshot(theirs)
    with org_scope(a), pytest.raises(OrgScopeError, match="another organization"), transaction.atomic():
        _upsert(Tool, [Tool(pk=theirs["tool"].pk, name="pwned", type=Tool.Type.EMAIL)], ["id"])
    with org_scope(a), pytest.raises(OrgScopeError, match="another organization"), transaction.atomic():
        _upsert(Agent, [Agent(pk=theirs["agent"].pk, name="pwned")], ["id"])
    # The organization row itself, by its key or by its unique slug.
    for twin in (Organization(pk=b.pk, name="pwned", slug="pwned"), Organization(name="pwned", slug=b.slug)):
        with org_scope(a), pytest.raises(OrgScopeError, match="another organization"), transaction.atomic():
            _upsert(Organization, [twin], ["id"] if twin.pk == b.pk else ["slug"])
    assert _snapshot(theirs) == before
    with org_scope(a):  # an upsert inside the organization still works
        _upsert(Tool, [Tool(pk=mine["tool"].pk, name="renamed", type=Tool.Type.EMAIL)], ["id"])
    assert _stored(mine["tool"])["name"] == "renamed"


def test_bulk_writes_of_users_check_the_organization(two):
    a, b, mine, theirs = two
    with org_scope(a), pytest.raises(OrgScopeError, match="belongs to organization"), transaction.atomic():
        User.objects.bulk_create([User(org_id=b.pk, email="planted@b.test", email_normalized="planted@b.test")])
    with org_scope(a), pytest.raises(OrgScopeError, match="belongs to organization"), transaction.atomic():
        User.objects.bulk_update([User(pk=theirs["user"].pk, org_id=b.pk, first_name="pwned")], ["first_name"])
    with org_scope(a), pytest.raises(OrgScopeError, match="created_by"), transaction.atomic():
        User.objects.bulk_create(
            [User(email="new@a.test", email_normalized="new@a.test", created_by_id=theirs["user"].pk)]
        )
    with unscoped():
        assert not User.all_orgs.filter(email__in=["planted@b.test", "new@a.test"]).exists()
        assert User.all_orgs.get(pk=theirs["user"].pk).first_name == theirs["user"].first_name
    with org_scope(a):  # the organization is filled in, as by save()
        (created,) = User.objects.bulk_create([User(email="new@a.test", email_normalized="new@a.test")])
    assert created.org_id == a.pk


# --- 3. the parallel-run store --------------------------------------------------------------


def test_the_store_never_takes_over_another_organizations_row_by_its_id(make_org, make_user, default_org):
    from legacy.store import DatabaseStore
    from tests.test_store_modes import agent

    b = make_org("B")
    theirs = populate(b, make_user(b, email="member@b.test"), suffix="-g")
    # A row nobody links to: the composite tenant keys (PostgreSQL, MariaDB) cannot refuse its move.
    theirs["lonely"] = Agent.all_orgs.create(org=b, name="Lonely-g")
    before = _snapshot(theirs)
    store = DatabaseStore()
    # The store checked a record's legacy id only; the writer matches rows by key, and a record
    # id that is a UUID is kept as the primary key: a record named by the id of B's agent (made
    # through the ORM, no legacy id) updated that agent, its organization included.
    for name in ("agent", "lonely"):
        with org_scope(default_org), pytest.raises(OrgScopeError, match="another organization"):
            store.save("agents", agent(agent_id=str(theirs[name].pk), name="Hijack"))
    assert _snapshot(theirs) == before
    with org_scope(default_org):  # a record of the active organization still saves
        store.save("agents", agent(name="Helper"))
        assert store.get("agents", agent()["id"])["name"] == "Helper"


# --- 4. set operations with an unscoped queryset --------------------------------------------


@pytest.mark.parametrize("operation", ["union", "intersection", "difference"])
def test_a_scoped_queryset_cannot_be_combined_with_an_unscoped_one_by_set_operations(two, operation):
    a, b, mine, theirs = two
    with org_scope(a):
        scoped = Agent.objects.order_by().values_list("name", flat=True)
        everything = Agent.all_orgs.order_by().values_list("name", flat=True)
        with pytest.raises(OrgScopeError, match="combined"):
            getattr(scoped, operation)(everything)
        with pytest.raises(OrgScopeError, match="combined"):
            getattr(everything, operation)(scoped)
        # Two scoped querysets combine: both read A's rows only.
        assert set(scoped.union(Agent.objects.order_by().values_list("name", flat=True))) == {mine["agent"].name}
