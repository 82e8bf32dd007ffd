"""Attacks on the organization scoping by a careless developer and a hostile organization
admin, with two organizations A and B. Each test is named after the attack it replays;
every one must find nothing of B's from A's scope (or fail closed with no scope)."""

from __future__ import annotations

import pickle

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Subquery
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Group, GroupMembership, MFASettings, Organization, User, UserSession
from agentforge_agents.models import Agent, AgentTool, Tool
from agentforge_core.models import cross_org_links
from agentforge_core.tenancy import OrgScopeError, org_scope, unscoped
from conversations.models import Conversation, Message
from knowledge.models import Document, DocumentChunk
from security.models import APIKey
from tests.admin_support import SECRET_MARKERS, admin_world, form_data

pytestmark = pytest.mark.django_db


# --- 1. joins from the user and organization managers ------------------------------------


def test_joins_from_user_objects_into_another_organization_fail_closed(two):
    a, b, mine, theirs = two
    secret_paths = ("mfa__totp_secret", "owned_tools__credentials", "conversations__messages__content")
    with pytest.raises(OrgScopeError):
        list(User.objects.filter(org=b).values_list(*secret_paths))
    with org_scope(a):
        assert list(User.objects.filter(org=b).values_list(*secret_paths)) == []
        rows = list(
            User.objects.filter(pk=mine["user"].pk).values_list("mfa__totp_secret", "conversations__messages__content")
        )
        assert {secret for secret, _ in rows} == {SECRET_MARKERS["totp"]}
        assert {content for _, content in rows} == {"Hello <b>agent</b>", "Hi! How can I help?"}
        with pytest.raises(User.DoesNotExist):
            User.objects.get(pk=theirs["user"].pk)


def test_joins_from_organization_objects_show_only_the_active_organizations_secrets(two):
    a, b, mine, theirs = two
    paths = ("google_client_secret", "ldap_configs__bind_password", "tools__credentials")
    with pytest.raises(OrgScopeError):
        list(Organization.objects.values_list(*paths))
    with org_scope(a):
        rows = list(Organization.objects.values_list(*paths))
        assert rows == [(SECRET_MARKERS["google"], SECRET_MARKERS["ldap"], mine["tool"].credentials)]
        assert list(Organization.objects.filter(pk=b.pk)) == []
    with unscoped():
        assert Organization.objects.filter(pk__in=[a.pk, b.pk]).count() == 2
    assert set(Organization.all_orgs.filter(pk__in=[a.pk, b.pk]).values_list("pk", flat=True)) == {a.pk, b.pk}


def test_one_to_one_and_forward_accessors_do_not_cross_into_another_organization(two, plant):
    a, b, mine, theirs = two
    their_user = User.all_orgs.get(pk=theirs["user"].pk)  # obtained the system way
    with org_scope(a):
        with pytest.raises(MFASettings.DoesNotExist):
            their_user.mfa  # noqa: B018 - the access is the attack
        assert User.all_orgs.get(pk=mine["user"].pk).mfa.totp_secret == SECRET_MARKERS["totp"]
    # Authentication runs before any organization is known: the accessor works there.
    assert User.all_orgs.get(pk=theirs["user"].pk).mfa.pk == theirs["mfasettings"].pk

    # A planted link from A's conversation to B's agent: the accessor refuses to follow it.
    plant(Conversation, mine["conversation"], agent_id=theirs["agent"].pk)
    with org_scope(a):
        conversation = Conversation.objects.get(pk=mine["conversation"].pk)
        with pytest.raises(Agent.DoesNotExist):
            conversation.agent  # noqa: B018
        joined = list(Conversation.objects.filter(pk=conversation.pk).select_related("agent"))
        if connection.vendor == "postgresql":
            # Row-level security hides B's agent from the join itself: the (nullable) link
            # finds no row, as if it were NULL.
            assert joined == [conversation] and joined[0]._state.fields_cache["agent"] is None
        else:
            assert joined == []


def test_joins_through_a_planted_cross_organization_link_stay_in_the_active_organization(two, plant):
    a, b, mine, theirs = two
    # A's agent linked (by a bug, before the checks) to B's tool through an A-owned through row.
    link = AgentTool.all_orgs.get(agent=mine["agent"])
    plant(AgentTool, link, tool_id=theirs["tool"].pk)
    their_creds = theirs["tool"].credentials
    with org_scope(a):
        for query in (
            Agent.objects.values_list("tools__credentials", flat=True),
            Agent.objects.filter(tools__isnull=False).values_list("tools__credentials", flat=True),
            Organization.objects.values_list("agents__tools__credentials", flat=True),
            User.objects.values_list("owned_agents__tools__credentials", flat=True),
        ):
            assert their_creds not in list(query)
        assert list(Tool.objects.filter(agents=mine["agent"])) == []
    # The same query through all_orgs (system work) sees the link: the restriction is the scope's.
    assert their_creds in list(Agent.all_orgs.filter(pk=mine["agent"].pk).values_list("tools__credentials", flat=True))


def test_left_joins_keep_rows_that_have_nothing_to_join(make_org, make_user):
    a = make_org()
    lonely = make_user(a, email="lonely@a.test")
    with org_scope(a):
        assert list(User.objects.filter(pk=lonely.pk).values_list("email", "mfa__totp_secret")) == [
            ("lonely@a.test", None)
        ]


# --- 2. raw() and extra() ------------------------------------------------------------------


@pytest.mark.parametrize("manager", [lambda: Agent.objects, lambda: User.objects, lambda: Organization.objects])
def test_raw_and_extra_on_a_scoped_manager_are_refused_in_every_scope(two, manager):
    a, b, mine, theirs = two
    table = manager().model._meta.db_table

    def attempt():
        with pytest.raises(OrgScopeError, match="raw SQL"):
            manager().raw(f"SELECT * FROM {table}")
        with pytest.raises(OrgScopeError, match="raw SQL"):
            manager().extra(where=["1=1) OR (1=1"])

    attempt()  # no organization active
    with org_scope(a):
        attempt()
    with unscoped():
        attempt()


def test_all_orgs_raw_stays_for_system_work(two):
    a, b, mine, theirs = two
    with unscoped():
        names = {agent.name for agent in Agent.all_orgs.raw("SELECT * FROM agents")}
    assert {mine["agent"].name, theirs["agent"].name} <= names
    with org_scope(a):
        names = {agent.name for agent in Agent.all_orgs.raw("SELECT * FROM agents")}
    if connection.vendor == "postgresql":  # row-level security: the active organization's rows only
        assert names == {mine["agent"].name}
        # Hand-written SQL with no organization active (not unscoped()) sees no tenant row.
        assert list(Agent.all_orgs.raw("SELECT * FROM agents")) == []
    else:
        assert {mine["agent"].name, theirs["agent"].name} <= names


# --- 3. cross-organization writes and links ---------------------------------------------------


def test_update_through_a_scoped_manager_never_moves_rows_to_another_organization(two):
    a, b, mine, theirs = two
    with org_scope(a):
        for values in ({"org_id": b.pk}, {"org": b}):
            with pytest.raises(OrgScopeError, match="never move"):
                Agent.objects.filter(pk=mine["agent"].pk).update(**values)
        with pytest.raises(OrgScopeError, match="never move"):
            User.objects.filter(pk=mine["user"].pk).update(org=b)
    assert Agent.all_orgs.get(pk=mine["agent"].pk).org_id == a.pk
    assert User.all_orgs.get(pk=mine["user"].pk).org_id == a.pk


def test_links_to_another_organizations_rows_are_refused_on_every_write_path(two):
    a, b, mine, theirs = two
    their_agent, their_tool, their_user = theirs["agent"], theirs["tool"], theirs["user"]
    attempts = {
        "create": lambda: Conversation.objects.create(agent=their_agent),
        "create by id": lambda: Conversation.objects.create(agent_id=their_agent.pk),
        "save": lambda: Conversation(agent_id=their_agent.pk, title="x").save(),
        "bulk_create": lambda: Conversation.objects.bulk_create([Conversation(agent=their_agent)]),
        "bulk_update": lambda: Conversation.objects.bulk_update(
            [Conversation(pk=mine["conversation"].pk, org_id=a.pk, agent_id=their_agent.pk)], ["agent"]
        ),
        "update": lambda: Conversation.objects.filter(pk=mine["conversation"].pk).update(agent=their_agent),
        "update by id": lambda: Conversation.objects.filter(pk=mine["conversation"].pk).update(agent_id=their_agent.pk),
        "update by subquery": lambda: Conversation.objects.update(
            agent=Subquery(Agent.all_orgs.filter(pk=their_agent.pk).values("pk"))
        ),
        "related add": lambda: Agent.objects.get(pk=mine["agent"].pk).tools.add(their_tool),
        "related set": lambda: Agent.objects.get(pk=mine["agent"].pk).tools.set([their_tool]),
        "related create": lambda: Agent.objects.get(pk=mine["agent"].pk).conversations.create(user=their_user),
        "through model": lambda: AgentTool.objects.create(agent=mine["agent"], tool=their_tool, tool_ref="x"),
        "group member": lambda: Group.objects.get(pk=mine["group"].pk).members.add(their_user),
        "user's manager": lambda: User.objects.filter(pk=mine["user"].pk).update(manager=their_user),
    }
    before = (Conversation.all_orgs.count(), AgentTool.all_orgs.count(), GroupMembership.all_orgs.count())
    with org_scope(a):
        for name, attempt in attempts.items():
            with pytest.raises(OrgScopeError), transaction.atomic():
                attempt()
                pytest.fail(f"{name}: a link to organization B was written from A's scope")
    assert (Conversation.all_orgs.count(), AgentTool.all_orgs.count(), GroupMembership.all_orgs.count()) == before
    assert list(cross_org_links()) == []


def test_system_work_cannot_link_organizations_either(two):
    a, b, mine, theirs = two
    with pytest.raises(OrgScopeError, match="belongs to organization"):
        Conversation.all_orgs.create(org=a, agent=theirs["agent"])
    with unscoped(), pytest.raises(OrgScopeError):
        AgentTool.all_orgs.bulk_create([AgentTool(org=a, agent=mine["agent"], tool=theirs["tool"], tool_ref="x")])
    # Same-organization links are written as before.
    with org_scope(a):
        Conversation.objects.create(agent=mine["agent"], user=mine["user"])
        second = Tool.objects.create(name="second", type=Tool.Type.API)
        AgentTool.objects.create(agent=mine["agent"], tool=second, tool_ref=str(second.pk), position=1)
        assert set(Agent.objects.get(pk=mine["agent"].pk).tools.all()) == {mine["tool"], second}


def test_cross_org_links_finds_links_written_around_the_checks(two, plant):
    a, b, mine, theirs = two
    plant(Conversation, mine["conversation"], agent_id=theirs["agent"].pk)
    found = [(model, field.name, pk, target) for model, field, pk, _, target in cross_org_links()]
    assert found == [(Conversation, "agent", mine["conversation"].pk, theirs["agent"].pk)]


def test_a_superusers_inline_formset_cannot_add_a_user_to_another_organizations_group(client, make_org, make_user):
    world = admin_world(make_org, make_user)
    their_group = world["theirs"]["group"]
    stranger = world["mine"]["user"]  # a user of Acme
    client.force_login(world["superuser"])
    url = reverse("admin:accounts_group_change", args=[their_group.pk])
    data = form_data(client.get(url))
    extra = int(data["memberships-INITIAL_FORMS"])
    data[f"memberships-{extra}-user"] = str(stranger.pk)
    response = client.post(url, data)
    assert response.status_code == 200
    assert "belongs to another organization" in response.content.decode()
    assert not GroupMembership.all_orgs.filter(group=their_group, user=stranger).exists()

    # The same form with Globex's own member goes through.
    own = make_user(world["other"], email="new@globex.test")
    data[f"memberships-{extra}-user"] = str(own.pk)
    assert client.post(url, data).status_code == 302
    assert GroupMembership.all_orgs.filter(group=their_group, user=own).exists()


def test_the_store_never_links_an_organizations_record_to_another_organizations_rows(make_org):
    from legacy.store import DatabaseStore

    default, other = Organization.get_default(), make_org()
    theirs = Tool.all_orgs.create(org=other, name="theirs", type=Tool.Type.API, legacy_id="tool-theirs")
    mine = Tool.all_orgs.create(org=default, name="mine", type=Tool.Type.API, legacy_id="tool-mine")
    record = {
        "id": "3f0c9a52-1d7e-4f7e-9a55-0c1d2e3f4a5b",
        "name": "Helper",
        "goal": "",
        "tasks": [],
        "tool_ids": ["tool-mine", "tool-theirs"],
        "status": "draft",
        "is_active": True,
        "created_at": "2026-01-20T10:00:00",
        "updated_at": "2026-01-20T10:00:00",
    }
    with org_scope(default):
        # AgentForge's own code writes such links (docs/legacy-format.md §6): the id is kept as
        # a dangling reference, as the import keeps it, and never becomes a link.
        DatabaseStore().save("agents", record)
        assert list(Agent.objects.get(pk=record["id"]).tools.all()) == [mine]
        assert DatabaseStore().get("agents", record["id"])["tool_ids"] == ["tool-mine", "tool-theirs"]
    assert not AgentTool.all_orgs.filter(tool=theirs).exists()


# --- 4. the scope is bound when the query runs --------------------------------------------------


def test_a_queryset_built_in_another_scope_returns_the_running_scopes_rows(two):
    a, b, mine, theirs = two
    with org_scope(b):
        built_in_b = Agent.objects.all()
    with unscoped():
        built_unscoped = Agent.objects.order_by("name")
    with org_scope(a):
        assert list(built_in_b) == [mine["agent"]]
        assert list(built_unscoped) == [mine["agent"]]
        assert built_in_b.count() == 1


def test_results_fetched_in_one_organization_are_not_reused_in_another(two):
    a, b, mine, theirs = two
    with org_scope(b):
        cached = Agent.objects.all()
        assert list(cached) == [theirs["agent"]]  # evaluated (and cached) in B
        pickled = pickle.dumps(cached)
        pickled_unevaluated = pickle.dumps(Message.objects.all())
    with org_scope(a):
        assert list(cached) == [mine["agent"]]
        with org_scope(b):
            list(cached)
        assert cached[0] == mine["agent"]
        with org_scope(b):
            list(cached)
        assert len(cached) == 1 and cached.count() == 1 and cached.exists()
        assert list(pickle.loads(pickled)) == [mine["agent"]]
        assert set(pickle.loads(pickled_unevaluated)) == set(Message.all_orgs.filter(org=a))
    with pytest.raises(OrgScopeError):
        list(pickle.loads(pickled))


def test_a_scoped_queryset_cannot_be_combined_with_an_unscoped_one(two):
    a, b, mine, theirs = two
    with org_scope(a):
        with pytest.raises(OrgScopeError, match="combined"):
            list(Agent.objects.all() | Agent.all_orgs.all())
        with pytest.raises(OrgScopeError, match="combined"):
            list(Agent.all_orgs.all() & Agent.objects.all())
        assert list(Agent.objects.filter(name="x") | Agent.objects.all()) == [mine["agent"]]


# --- 5. the importer keeps each chunk in its document's organization ----------------------------


def test_import_json_keeps_an_organizations_chunks_in_that_organization(tmp_path):
    from tests import legacy_corpus as C
    from tests.legacy_helpers import run_import

    files, _ = C.build_corpus()
    other = "org_abc123def456"
    # D1 becomes a document of the other organization (outside any tool of the default one).
    files["documents.json"][C.D1].update(org_id=other, tool_id=None)
    for entry in files["chunks_index.json"]:
        if entry.get("doc_id") == C.D1:
            entry["tool_id"] = None
    for relative, data in files.items():
        C.dump(tmp_path / relative, data, relative)
    run_import(tmp_path, verbosity=2)

    other_pk = Organization.all_orgs.get(legacy_id=other).pk
    default_pk = Organization.all_orgs.get(legacy_id="org_default").pk
    document = Document.all_orgs.get(legacy_id=C.D1)
    assert document.org_id == other_pk
    chunks = DocumentChunk.all_orgs.filter(document=document)
    assert chunks.filter(in_index=True).count() == 2  # the two chunks_index entries of the document
    assert set(chunks.values_list("org_id", flat=True)) == {other_pk}
    # Chunks without a document of their own stay with their tool's organization.
    assert set(DocumentChunk.all_orgs.filter(document__isnull=True).values_list("org_id", flat=True)) == {default_pk}
    with org_scope(default_pk):
        assert not DocumentChunk.objects.filter(document_id=document.pk).exists()
    with org_scope(other_pk):
        assert DocumentChunk.objects.filter(document_id=document.pk).count() == chunks.count()
    # The JSON era's identity configs of the other organization name the default
    # organization's role: a link the database refuses, so the reference is kept as a
    # dangling one (exported unchanged), never stored as a foreign key.
    assert list(cross_org_links()) == []
    from security.models import LDAPConfig, OAuthConfig

    for model, legacy_id in ((LDAPConfig, "ldap_aaaaaaaaaaaa"), (OAuthConfig, "oauth_bbbbbbbbbbbb")):
        config = model.all_orgs.get(legacy_id=legacy_id)
        assert config.default_role_id is None
        assert config.legacy_extra["__dangling__"]["default_role_id"] == "role_user"


# --- 6. an organization admin never acts as a more privileged user -------------------------------


@pytest.fixture
def ranks(make_org, make_user):
    """Acme's org admin, and three users above it: a superuser, a user holding an AgentForge
    permission the org admin lacks and a staff user holding such a Django permission; plus
    a plain member."""
    from django.contrib.auth.models import Permission as DjangoPermission

    world = admin_world(make_org, make_user, rows=False)
    org = world["org"]
    world["orgadmin"].direct_permissions = ["agents:read", "users:manage"]  # not system:admin
    world["orgadmin"].save(update_fields=["direct_permissions"])
    world["af_admin"] = make_user(org, email="sysadmin@acme.test", direct_permissions=["system:admin"])
    world["django_power"] = make_user(org, email="power@acme.test", is_staff=True)
    world["django_power"].user_permissions.add(
        DjangoPermission.objects.get(codename="change_group", content_type__app_label="auth")
    )
    world["member"] = make_user(org, email="plain@acme.test", direct_permissions=["agents:read"])
    return world


ABOVE = ("superuser", "af_admin", "django_power")


@pytest.mark.parametrize("target", ABOVE)
def test_an_org_admin_cannot_create_an_api_key_for_a_more_privileged_user(client, ranks, target):
    client.force_login(ranks["orgadmin"])
    data = {"name": "escalate", "scopes": "[]", "expires_at_0": "", "expires_at_1": "", "user": str(ranks[target].pk)}
    response = client.post(reverse("admin:security_apikey_add"), data)
    assert response.status_code == 200
    assert not APIKey.all_orgs.filter(name="escalate").exists()
    # The same form for a plain member is accepted.
    data["user"] = str(ranks["member"].pk)
    assert client.post(reverse("admin:security_apikey_add"), data).status_code == 302
    assert APIKey.all_orgs.get(name="escalate").user_id == ranks["member"].pk


@pytest.mark.parametrize("target", ABOVE)
def test_an_org_admin_cannot_set_up_mfa_for_a_more_privileged_user(client, ranks, target):
    client.force_login(ranks["orgadmin"])
    data = {
        "user": str(ranks[target].pk),
        "enabled": "on",
        "methods": '["totp"]',
        "totp_secret": "ATTACKERSECRET",
        "totp_verified": "on",
        "phone_number": "",
        "recovery_email": "",
    }
    response = client.post(reverse("admin:accounts_mfasettings_add"), data)
    assert response.status_code == 200
    assert not MFASettings.all_orgs.filter(user=ranks[target]).exists()
    data["user"] = str(ranks["member"].pk)
    assert client.post(reverse("admin:accounts_mfasettings_add"), data).status_code == 302
    assert MFASettings.all_orgs.get(user=ranks["member"]).totp_secret == "ATTACKERSECRET"


@pytest.mark.parametrize("target", ABOVE)
def test_an_org_admin_cannot_see_or_change_a_more_privileged_users_credentials(client, ranks, target):
    from tests.admin_support import make_api_key

    above, member = ranks[target], ranks["member"]
    rows = {}
    for who in (above, member):
        rows[who.pk] = {
            "apikey": make_api_key(ranks["org"], name=f"key of {who.email}", user=who),
            "mfasettings": MFASettings.all_orgs.create(org=ranks["org"], user=who, totp_secret="S"),
            "usersession": UserSession.all_orgs.create(
                org=ranks["org"], user=who, token_hash=f"{who.pk.hex}{'0' * 32}", expires_at="2100-01-01T00:00:00Z"
            ),
        }
    client.force_login(ranks["orgadmin"])
    for name, row in rows[above.pk].items():
        listing = client.get(reverse(f"admin:{row._meta.app_label}_{name}_changelist")).content.decode()
        assert above.email not in listing, name
        assert member.email in listing, name
        assert client.get(reverse(f"admin:{row._meta.app_label}_{name}_change", args=[row.pk])).status_code == 404
        assert (
            client.get(
                reverse(f"admin:{row._meta.app_label}_{name}_change", args=[rows[member.pk][name].pk])
            ).status_code
            == 200
        )
    # The password form of the user above is closed; the member's is open.
    assert client.get(reverse("admin:auth_user_password_change", args=[above.pk])).status_code == 403
    assert client.get(reverse("admin:auth_user_password_change", args=[member.pk])).status_code == 200
    response = client.post(
        reverse("admin:auth_user_password_change", args=[above.pk]),
        {"password1": "Taken-over-123!", "password2": "Taken-over-123!", "usable_password": "true"},
    )
    assert response.status_code == 403
    assert not User.all_orgs.get(pk=above.pk).check_password("Taken-over-123!")


# --- 7. natural keys -------------------------------------------------------------------------------


def test_get_by_natural_key_with_an_email_shared_by_two_organizations(make_org, make_user):
    default = Organization.get_default()
    other = make_org()
    in_default = make_user(default, email="Shared@Example.com")
    in_other = make_user(other, email="shared@example.com")
    # The email alone names the user of the organization in effect: the default one
    # with none active (where createsuperuser would put a new user), else the active one.
    assert User.objects.get_by_natural_key("shared@example.com") == in_default
    with unscoped():
        assert User.objects.get_by_natural_key("SHARED@example.com") == in_default
    with org_scope(other):
        assert User.objects.get_by_natural_key("shared@example.com") == in_other
    assert User.all_orgs.get_by_natural_key("shared@example.com", str(other.pk)) == in_other
    assert User.all_orgs.get_by_natural_key(*in_other.natural_key()) == in_other
    with pytest.raises(User.DoesNotExist):
        User.all_orgs.get_by_natural_key("nobody@example.com")


def test_createsuperuser_works_with_an_email_taken_in_another_organization(make_org, make_user, monkeypatch):
    other = make_org(legacy_id="org_other")
    theirs = make_user(other, email="root@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "Long-enough-passw0rd!")
    call_command("createsuperuser", "--noinput", "--email", "root@example.com", verbosity=0)
    created = User.all_orgs.get(email_normalized="root@example.com", is_superuser=True)
    assert created.org_id == Organization.get_default().pk
    assert set(User.all_orgs.filter(email_normalized="root@example.com")) == {theirs, created}


# --- 8. the second round: RawSQL, exclude() across relations, prefetches, changepassword --------


def _raw_sql_attempts(table):
    from django.db.models import BooleanField, CharField, Count, F
    from django.db.models.expressions import RawSQL

    everything = RawSQL(f"SELECT COUNT(*) FROM {table}", [])
    anything = RawSQL("1 = 1", [], output_field=BooleanField())
    return {
        "annotate": lambda m: list(m.annotate(n=everything).values_list("n", flat=True)),
        "alias then filter": lambda m: list(m.alias(n=everything).filter(n__gte=0)),
        "filter": lambda m: list(m.filter(anything)),
        "exclude": lambda m: list(m.exclude(anything)),
        "order_by": lambda m: list(m.order_by(everything)),
        "aggregate": lambda m: m.aggregate(n=Count(everything)),
        "values": lambda m: list(m.values(n=everything)),
        "update": lambda m: m.update(name=RawSQL(f"(SELECT MAX(name) FROM {table})", [], output_field=CharField())),
        "inside another expression": lambda m: list(m.annotate(n=F("name")).filter(name=everything)),
    }


@pytest.mark.parametrize("attempt", list(_raw_sql_attempts("agents")))
def test_raw_sql_expressions_on_a_scoped_manager_are_refused_in_every_scope(two, attempt):
    a, b, mine, theirs = two
    run = _raw_sql_attempts("agents")[attempt]
    names = set(Agent.all_orgs.values_list("name", flat=True))
    for scope in (org_scope(a), unscoped(), org_scope(b)):
        with scope, pytest.raises(OrgScopeError, match="RawSQL"), transaction.atomic():
            run(Agent.objects.all())
    with pytest.raises(OrgScopeError, match="RawSQL"), transaction.atomic():  # no organization active
        run(Agent.objects.all())
    with org_scope(a):  # a related manager too
        owned = User.objects.get(pk=mine["user"].pk).owned_agents.all()
        with pytest.raises(OrgScopeError, match="RawSQL"), transaction.atomic():
            run(owned)
    assert set(Agent.all_orgs.values_list("name", flat=True)) == names


def test_raw_sql_expressions_stay_for_system_work_through_all_orgs(two):
    from django.db.models.expressions import RawSQL

    a, b, mine, theirs = two
    counted = Agent.all_orgs.filter(pk=mine["agent"].pk).annotate(n=RawSQL("SELECT COUNT(*) FROM agents", []))
    assert counted.get().n >= 2


def test_exclude_across_a_relation_does_not_see_another_organizations_rows(two, plant):
    from django.db.models import Q

    a, b, mine, theirs = two
    # A's agent linked (planted, around the checks) to B's tool. A filter across the link
    # finds nothing from A's scope; the NOT EXISTS subquery of an exclude() must not find
    # B's tool either, or A learns B's tool name by what disappears.
    plant(AgentTool, AgentTool.all_orgs.get(agent=mine["agent"]), tool_id=theirs["tool"].pk)
    their_name = theirs["tool"].name
    with org_scope(a):
        assert list(Agent.objects.filter(tools__name=their_name)) == []
        assert list(Agent.objects.exclude(tools__name=their_name)) == [mine["agent"]]
        assert list(Agent.objects.filter(~Q(tools__name=their_name))) == [mine["agent"]]
        assert list(Agent.objects.exclude(tools__name=their_name, tools__type=Tool.Type.EMAIL)) == [mine["agent"]]
        assert list(Organization.objects.exclude(agents__tools__name=their_name)) == [a]
        assert list(User.objects.filter(pk=mine["user"].pk).exclude(owned_agents__tools__name=their_name)) == [
            mine["user"]
        ]
        # Rows of the active organization still exclude as before.
        assert list(Agent.objects.exclude(conversations__title=mine["conversation"].title)) == []
    with pytest.raises(OrgScopeError):
        list(Agent.objects.exclude(tools__name=their_name))
    # System work sees the planted link: the restriction is the scope's.
    with unscoped():
        assert mine["agent"] not in list(Agent.objects.exclude(tools__name=their_name))


@pytest.mark.parametrize("relation", ["tools", "conversations"])
def test_prefetched_related_rows_are_fetched_again_under_another_organization(two, relation):
    from django.db.models import Prefetch

    a, b, mine, theirs = two
    theirs_related = {"tools": theirs["tool"], "conversations": theirs["conversation"]}[relation]
    mine_related = {"tools": mine["tool"], "conversations": mine["conversation"]}[relation]
    with unscoped():
        agents = list(Agent.objects.filter(pk__in=[mine["agent"].pk, theirs["agent"].pk]).prefetch_related(relation))
    their_agent = next(agent for agent in agents if agent.pk == theirs["agent"].pk)
    my_agent = next(agent for agent in agents if agent.pk == mine["agent"].pk)
    with unscoped(), CaptureQueriesContext(connection) as queries:
        assert list(getattr(their_agent, relation).all()) == [theirs_related]  # the prefetched rows
    assert len(queries) == 0
    with org_scope(a):
        # Filled unscoped, read under A: the prefetched queryset runs again, under A.
        assert list(getattr(their_agent, relation).all()) == []
        assert getattr(their_agent, relation).count() == 0
        assert list(getattr(my_agent, relation).all()) == [mine_related]
    with org_scope(b):
        assert list(getattr(their_agent, relation).all()) == [theirs_related]
    # Decided and documented: loaded instances are data in hand. A Prefetch(to_attr) list
    # is a plain list, like the instance's own fields; it is not re-checked.
    with unscoped():
        kept = Agent.objects.prefetch_related(Prefetch(relation, to_attr="kept")).get(pk=theirs["agent"].pk)
    with org_scope(a):
        assert kept.kept == [theirs_related]


def _new_password(monkeypatch, password="Changed-by-0perator!"):
    from django.contrib.auth.management.commands.changepassword import Command as AuthCommand

    monkeypatch.setattr(AuthCommand, "_get_pass", lambda self, prompt="Password: ": password)
    return password


def test_changepassword_finds_the_user_in_any_organization_and_audits_the_change(
    make_org, make_user, monkeypatch, capsys
):
    from django.core.management import get_commands

    from security.models import AuditLog

    a, b = make_org("A"), make_org("B")
    mine, theirs = make_user(a, email="member@a.test"), make_user(b, email="Member@B.test")
    assert get_commands()["changepassword"] == "accounts"  # ours, not django.contrib.auth's
    password = _new_password(monkeypatch)
    call_command("changepassword", "MEMBER@b.test")  # no organization active
    assert User.all_orgs.get(pk=theirs.pk).check_password(password)
    assert not User.all_orgs.get(pk=mine.pk).check_password(password)
    entry = AuditLog.all_orgs.get(legacy_action="password_change", resource_id=str(theirs.pk))
    assert entry.org_id == b.pk
    assert "Password changed successfully for user 'Member@B.test'" in capsys.readouterr().out


def test_changepassword_with_an_email_of_two_organizations_needs_the_organization(make_org, make_user, monkeypatch):
    from django.core.management.base import CommandError

    a, b = make_org("A", legacy_id="org_a"), make_org("B", legacy_id="org_b")
    in_a, in_b = make_user(a, email="shared@example.com"), make_user(b, email="shared@example.com")
    password = _new_password(monkeypatch)
    with pytest.raises(CommandError, match=r"several organizations \(org_a, org_b\): add --org"):
        call_command("changepassword", "shared@example.com")
    with pytest.raises(CommandError, match="does not exist"):
        call_command("changepassword", "nobody@example.com")
    call_command("changepassword", "shared@example.com", org="org_b")
    assert User.all_orgs.get(pk=in_b.pk).check_password(password)
    assert not User.all_orgs.get(pk=in_a.pk).check_password(password)
