"""Through PgBouncer in transaction mode with one server connection (scripts/start-pgbouncer),
two clients take turns on the same PostgreSQL session: the organization each statement runs
under is transaction-local, so nothing one client sets reaches the other."""

from __future__ import annotations

import os
import socket

import pytest
from django.db import connection
from django.db.utils import load_backend

from accounts.models import Organization
from agentforge_agents.models import Agent
from agentforge_core.tenancy import org_scope, unscoped

pytestmark = [pytest.mark.backends("postgresql")]

PGBOUNCER_PORT = int(os.environ.get("PGBOUNCER_PORT", "6432"))


def _pgbouncer_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", PGBOUNCER_PORT), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def through_pgbouncer(transactional_db):
    if not _pgbouncer_up():
        if os.environ.get("CI"):
            pytest.fail(f"PgBouncer is not listening on 127.0.0.1:{PGBOUNCER_PORT} (scripts/start-pgbouncer)")
        pytest.skip(f"PgBouncer is not listening on 127.0.0.1:{PGBOUNCER_PORT} (scripts/start-pgbouncer)")
    made = []

    def client():
        settings_dict = {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": str(PGBOUNCER_PORT)}
        options = {k: v for k, v in settings_dict["OPTIONS"].items() if k != "pool"}  # PgBouncer pools
        # Server-side prepared statements would be prepared on one client's turn and missing
        # (or someone else's) on the next: psycopg must not prepare through PgBouncer 1.18.
        options["prepare_threshold"] = None
        settings_dict["OPTIONS"] = options
        wrapper = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, alias=f"pgbouncer{len(made)}")
        made.append(wrapper)
        return wrapper

    yield client
    for wrapper in made:
        wrapper.close()
    # PgBouncer keeps its server connection open; the test database cannot be dropped while it is.
    import psycopg

    owner = connection.settings_dict.get("MIGRATION_USER") or connection.settings_dict["USER"]
    with psycopg.connect(
        host="127.0.0.1", port=PGBOUNCER_PORT, user=owner, dbname="pgbouncer", autocommit=True
    ) as admin:
        admin.execute(f"KILL {connection.settings_dict['NAME']}")
        admin.execute(f"RESUME {connection.settings_dict['NAME']}")  # KILL also pauses the database


def _rows(client, sql):
    with client.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def test_two_clients_alternating_organizations_share_one_session_and_leak_nothing(through_pgbouncer):
    a = Organization.objects.create(name="A", slug="bouncer-a")
    b = Organization.objects.create(name="B", slug="bouncer-b")
    agent_a = Agent.all_orgs.create(org=a, name="a")
    agent_b = Agent.all_orgs.create(org=b, name="b")
    first, second = through_pgbouncer(), through_pgbouncer()

    # One server session serves both clients (default_pool_size = 1): a session-wide setting
    # made by one is read by the other. That is what a session-level org would leak.
    _rows(first, "SELECT set_config('app.probe', 'first', false)")
    assert _rows(second, "SELECT current_setting('app.probe', true)") == [("first",)]
    with second.cursor() as cursor:
        cursor.execute("RESET app.probe")

    backends = set()
    for _ in range(3):
        with org_scope(a):
            assert _rows(first, "SELECT id, pg_backend_pid() FROM agents")[0][0] == agent_a.pk
            assert [r[0] for r in _rows(first, "SELECT id FROM agents")] == [agent_a.pk]
            backends.add(_rows(first, "SELECT pg_backend_pid()")[0][0])
        with org_scope(b):
            assert [r[0] for r in _rows(second, "SELECT id FROM agents")] == [agent_b.pk]
            backends.add(_rows(second, "SELECT pg_backend_pid()")[0][0])
        # Right after another client's turn, no organization and no role is left behind.
        assert _rows(first, "SELECT id FROM agents") == []
        assert _rows(second, "SELECT NULLIF(current_setting('app.current_org', true), ''), current_user") == [
            (None, connection.settings_dict["USER"])
        ]
        with unscoped():
            assert {r[0] for r in _rows(second, "SELECT id FROM agents")} >= {agent_a.pk, agent_b.pk}
        assert _rows(first, "SELECT id FROM agents") == []
    assert len(backends) == 1
