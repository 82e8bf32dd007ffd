"""Row-level security outside atomic(): each autocommit statement carries its own organization.

A module of its own: tests/test_rls.py keeps one transaction open around its tests
(tests.conftest.shared_rows), and this test needs none."""

from __future__ import annotations

import pytest
from django.db import connection

from accounts.models import Organization
from agentforge_agents.models import Agent
from agentforge_core.tenancy import org_scope, unscoped
from tests.test_rls import _all

pytestmark = pytest.mark.backends("postgresql")


def test_autocommit_statements_each_carry_their_own_organization(transactional_db):
    """Outside atomic() every statement runs in its own transaction; nothing is left set on
    the session between statements, which the next pooled user of the connection would see."""
    a = Organization.objects.create(name="A", slug="rls-ac-a")
    b = Organization.objects.create(name="B", slug="rls-ac-b")
    agent_a = Agent.all_orgs.create(org=a, name="a")
    agent_b = Agent.all_orgs.create(org=b, name="b")
    assert connection.get_autocommit()
    for _ in range(2):
        with org_scope(a):
            assert _all("SELECT id FROM agents") == [(agent_a.pk,)]
        with org_scope(b):
            assert _all("SELECT id FROM agents") == [(agent_b.pk,)]
        assert _all("SELECT id FROM agents") == []
        assert connection.connection.info.transaction_status == 0  # idle: nothing left open
    # Maintenance that PostgreSQL refuses inside a transaction block is sent as it is.
    with unscoped(), connection.cursor() as cursor:
        cursor.execute("VACUUM agents")
