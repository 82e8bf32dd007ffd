"""PostgreSQL row-level security, the second wall: with the ORM's scoping out of the way
(``all_orgs``, hand-written SQL) a statement run inside org_scope(A) still reads and
writes only A's rows. The tests connect as the application role (tests/conftest.py)."""

from __future__ import annotations

import copy

import pytest
from django.apps import apps
from django.db import DatabaseError, connection, models, transaction

from accounts import rls
from accounts.models import Organization, User
from accounts.tenant_schema import POLICY, policy_tables, tenant_models
from agentforge_agents.models import Agent
from agentforge_core.tenancy import org_scope, unscoped
from tests.conftest import shared_rows
from tests.test_tenancy import make_row

pytestmark = [pytest.mark.django_db, pytest.mark.backends("postgresql")]

TABLES = policy_tables(apps)


def _one(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def _org_ids(table):
    """Organization ids of every row a hand-written SELECT sees in ``table``."""
    column = TABLES[table]
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT DISTINCT "{column}" FROM "{table}"')
        return {row[0] for row in cursor.fetchall()}


def test_the_tests_run_as_a_role_that_neither_owns_the_tables_nor_bypasses_policies():
    superuser, bypass = _one("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
    assert (superuser, bypass) == (False, False)
    owners = {row[0] for row in _all("SELECT tableowner FROM pg_tables WHERE tablename = ANY(%s)", [list(TABLES)])}
    assert owners and _one("SELECT current_user")[0] not in owners


def _agent_orgs():
    return {row[0] for row in _all("SELECT org_id FROM agents")}


def _all(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_tenant_table_has_the_policy_enabled_and_forced(table):
    enabled, forced = _one("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s", [table])
    assert (enabled, forced) == (True, True)
    expected = f"({TABLES[table]} = ( SELECT (NULLIF(current_setting('app.current_org'::text, true), ''::text))::uuid AS \"nullif\"))"
    qual, check = _one(
        "SELECT qual, with_check FROM pg_policies WHERE tablename = %s AND policyname = %s", [table, POLICY]
    )
    assert qual == expected and check == expected


def test_the_organization_is_transaction_local():
    org = Organization.objects.create(name="local", slug="rls-local")
    with org_scope(org):
        assert _one("SELECT current_setting('app.current_org', true)")[0] == str(org.pk)
    assert _one("SELECT NULLIF(current_setting('app.current_org', true), '')")[0] is None
    with unscoped():
        assert _one("SELECT current_user")[0] == rls.bypass_role(connection.settings_dict)
    assert _one("SELECT current_user")[0] == rls.app_role(connection)


# The tests below share one set of rows, built once in a transaction that stays open around
# them (each test runs in a savepoint rolled back after it, as Django's setUpTestData does):
# building a row of every tenant model for three organizations per test took a third of
# PostgreSQL's run. Tests that need transactions of their own are in test_rls_autocommit.py.
@pytest.fixture
def three_orgs(three_orgs_once):
    return copy.deepcopy(three_orgs_once)  # each test its own instances, as setUpTestData gives


@pytest.fixture(scope="module")
def three_orgs_once(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), shared_rows():
        orgs = [Organization.objects.create(name=n, slug=f"rls-{n}") for n in "ABC"]
        rows = {}
        for model in tenant_models(apps):
            for org in orgs:
                rows[(model._meta.db_table, org.pk)] = make_row(model, org)
        yield orgs, rows


def test_hand_written_sql_inside_a_scope_sees_only_that_organization_on_every_table(three_orgs):
    orgs, _rows = three_orgs
    for org in orgs:
        with org_scope(org):
            for table in TABLES:
                assert _org_ids(table) == {org.pk}, table


@pytest.mark.parametrize("model", tenant_models(apps), ids=lambda m: m._meta.label)
def test_the_unscoped_manager_inside_a_scope_sees_only_that_organization(three_orgs, model):
    orgs, _rows = three_orgs
    manager = getattr(model, "all_orgs", None) or model._base_manager
    with org_scope(orgs[1]):
        assert set(manager.values_list("org_id", flat=True)) == {orgs[1].pk}
        assert manager.count() == manager.filter(org_id=orgs[1].pk).count()
    with unscoped():
        assert {orgs[0].pk, orgs[1].pk, orgs[2].pk} <= set(manager.values_list("org_id", flat=True))


def test_joins_from_an_unscoped_manager_stay_inside_the_organization(three_orgs):
    orgs, rows = three_orgs
    b_user = rows[("users", orgs[1].pk)]
    with org_scope(orgs[0]):
        # The attack: joins from a manager that is not scoped, with A active.
        assert not User.all_orgs.filter(pk=b_user.pk).exists()
        assert list(Organization._base_manager.values_list("pk", flat=True)) == [orgs[0].pk]
        secrets = set(User.all_orgs.values_list("mfa__totp_secret", "conversations__messages__content"))
        a_only = set(
            User.all_orgs.filter(org=orgs[0]).values_list("mfa__totp_secret", "conversations__messages__content")
        )
        assert secrets == a_only
        assert {a.pk for a in Agent.all_orgs.raw("SELECT * FROM agents")} == set(
            Agent.all_orgs.filter(org=orgs[0]).values_list("pk", flat=True)
        )


def test_writes_of_another_organizations_rows_are_refused_or_touch_nothing(three_orgs):
    orgs, rows = three_orgs
    a, b = orgs[0], orgs[1]
    agent_a, agent_b = rows[("agents", a.pk)], rows[("agents", b.pk)]
    with org_scope(a):
        # B's rows are invisible to UPDATE and DELETE.
        assert Agent.all_orgs.filter(pk=agent_b.pk).update(name="taken") == 0
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM agents WHERE id = %s", [agent_b.pk])
            assert cursor.rowcount == 0
        # Moving A's row into B, or writing a row that claims B, fails the WITH CHECK.
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            Agent.all_orgs.filter(pk=agent_a.pk).update(org_id=b.pk)
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            models.QuerySet(Agent).bulk_create([Agent(org=b, name="planted")])  # no ORM check
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            models.QuerySet(Organization).bulk_create([Organization(name="planted", slug="planted")])
    with unscoped():
        assert Agent.all_orgs.get(pk=agent_b.pk).name == agent_b.name
        assert not Agent.all_orgs.filter(name="planted").exists()
        assert Agent.all_orgs.get(pk=agent_a.pk).org_id == a.pk


@pytest.mark.parametrize("table", sorted(TABLES))
def test_hand_written_writes_inside_a_scope_cannot_reach_or_make_another_organizations_rows(three_orgs, table):
    orgs, _rows = three_orgs
    a, b = orgs[0], orgs[1]
    column = TABLES[table]
    with org_scope(a):
        with connection.cursor() as cursor:
            cursor.execute(f'UPDATE "{table}" SET "{column}" = "{column}" WHERE "{column}" = %s', [b.pk])
            assert cursor.rowcount == 0
            cursor.execute(f'DELETE FROM "{table}" WHERE "{column}" = %s', [b.pk])
            assert cursor.rowcount == 0
        if column == "org_id":
            # The audit trail's append-only trigger fires before the policy's check.
            refusal = "append-only" if table == "audit_logs" else "row-level security"
            with pytest.raises(DatabaseError, match=refusal), transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(f'UPDATE "{table}" SET org_id = %s WHERE org_id = %s', [b.pk, a.pk])
    with unscoped():
        assert {a.pk, b.pk} <= _org_ids(table)


def test_with_no_organization_hand_written_sql_sees_no_tenant_row(three_orgs):
    orgs, _rows = three_orgs
    for table in TABLES:
        assert _org_ids(table) == set(), table
    assert list(Agent.all_orgs.raw("SELECT * FROM agents")) == []
    # ORM statements from the unscoped managers are system work (authentication, tokens...).
    assert set(Agent.all_orgs.values_list("org_id", flat=True)) == {o.pk for o in orgs}
    with unscoped():
        assert {orgs[0].pk, orgs[1].pk, orgs[2].pk} <= _org_ids("agents")


def test_switching_organizations_and_rolling_back_savepoints_inside_one_transaction(three_orgs):
    orgs, _rows = three_orgs
    a, b = orgs[0], orgs[1]
    with transaction.atomic():
        with org_scope(a):
            assert _agent_orgs() == {a.pk}
        try:
            with transaction.atomic(), org_scope(b):
                assert _agent_orgs() == {b.pk}
                raise RuntimeError("roll the savepoint back")
        except RuntimeError:
            pass
        # The rollback restored A's setting in the database: B's scope must set it again.
        with org_scope(b):
            assert _agent_orgs() == {b.pk}
        with org_scope(a):
            assert _agent_orgs() == {a.pk}
        assert _agent_orgs() == set()


def test_every_postgresql_alias_gets_the_wrapper():
    from django.db import connections

    for alias in connections:
        conn = connections[alias]
        if conn.vendor == "postgresql":
            conn.ensure_connection()
            assert any(getattr(w, "marker", None) == rls.wrapper.marker for w in conn.execute_wrappers), alias
