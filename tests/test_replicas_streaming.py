"""Read replicas against a real PostgreSQL streaming replica (scripts/start-replica).

Runs with tests.settings_replica: ``scripts/test postgresql`` starts the replica and runs
this module in a second pytest session; elsewhere it is skipped. The replica lags on
purpose here: ``pg_wal_replay_pause()`` stops replay while the primary goes on.
"""

import asyncio
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections, router, transaction
from django.test.utils import CaptureQueriesContext

from agentforge_agents.models import Agent
from agentforge_core.tenancy import org_scope
from agentforge_site import replicas
from agentforge_site.replicas import COOKIE_NAME, _lsn, direct_connect_params
from operations.health import build_report

REPLICA = "replica1"
BASE = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.backends("postgresql"),
    pytest.mark.skipif(
        not getattr(settings, "DATABASE_REPLICAS", None),
        reason="needs scripts/start-replica and --ds tests.settings_replica (scripts/test postgresql runs it)",
    ),
    pytest.mark.django_db(transaction=True, databases=["default", REPLICA]),
]


def _raw(alias, sql, dbname=None):
    params = direct_connect_params(connections[alias], 5)
    if dbname:
        params["dbname"] = dbname
    with psycopg.connect(autocommit=True, **params) as conn:
        return conn.execute(sql).fetchone()


def wait_caught_up(timeout=30.0):
    """Until the replica has replayed everything the primary has written so far."""
    target = _lsn(_raw("default", "SELECT pg_current_wal_lsn()::text")[0])
    deadline = time.monotonic() + timeout
    while _lsn(_raw(REPLICA, "SELECT pg_last_wal_replay_lsn()::text", "postgres")[0]) < target:
        assert time.monotonic() < deadline, "the replica did not catch up"
        time.sleep(0.05)


@contextmanager
def replay_paused():
    _raw(REPLICA, "SELECT pg_wal_replay_pause()", "postgres")
    try:
        # A pause takes effect before the next WAL record: make one and wait for it.
        _raw("default", "SELECT txid_current()")
        deadline = time.monotonic() + 10
        while _raw(REPLICA, "SELECT pg_get_wal_replay_pause_state()", "postgres")[0] != "paused":
            assert time.monotonic() < deadline, "replay did not pause"
            time.sleep(0.02)
        yield
    finally:
        _raw(REPLICA, "SELECT pg_wal_replay_resume()", "postgres")


def another_request(fn):
    """Run fn as a different request would: its own read state, not pinned by our writes."""
    token = replicas.new_read_state()
    try:
        return fn()
    finally:
        replicas.end_read_state(token)


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment, django_db_blocker):
    """The test database on the primary only; the replica receives it by streaming."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        created = setup_databases(verbosity=0, interactive=False, aliases={"default"})
        # setup_databases made each replica alias a test mirror of the primary's settings;
        # point it back at the replica server, on the test database.
        test_name = connections["default"].settings_dict["NAME"]
        for alias in settings.DATABASE_REPLICAS:
            configured = connections.settings[alias]
            configured["NAME"] = test_name
            connections[alias].settings_dict = configured
        wait_caught_up()
    yield
    with django_db_blocker.unblock():
        replicas.monitor.reset()
        for alias in settings.DATABASE_REPLICAS:
            connections[alias].close()
            connections[alias].close_pool()
        # A test that failed half-way may leave a connection in another thread.
        _raw(
            "default",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{connections['default'].settings_dict['NAME']}' AND pid <> pg_backend_pid()",
        )
        teardown_databases(created, verbosity=0)


@pytest.fixture(autouse=True)
def fresh_replica():
    _raw(REPLICA, "SELECT pg_wal_replay_resume() WHERE pg_is_wal_replay_paused()", "postgres")
    wait_caught_up()
    replicas.monitor.reset()
    yield
    replicas.monitor.reset()


@pytest.fixture
def org(make_org):
    org = make_org("Replicated")
    wait_caught_up()
    return org


def _names(org):
    with org_scope(org.pk):
        return sorted(Agent.objects.values_list("name", flat=True))


def test_the_replica_alias_is_the_streaming_replica():
    assert _raw(REPLICA, "SELECT pg_is_in_recovery()")[0] is True
    assert _raw("default", "SELECT pg_is_in_recovery()")[0] is False
    assert router.allow_migrate(REPLICA, "agents") is False


def test_other_reads_use_the_replica(org):
    with org_scope(org.pk):
        Agent.objects.create(name="listed")
    wait_caught_up()
    with (
        CaptureQueriesContext(connections[REPLICA]) as on_replica,
        CaptureQueriesContext(connections["default"]) as on_primary,
    ):
        assert another_request(lambda: _names(org)) == ["listed"]
    assert len(on_replica.captured_queries) == 1 and not on_primary.captured_queries
    alias = another_request(lambda: router.db_for_read(Agent))
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        assert cursor.fetchone()[0] is True


def test_a_writer_reads_its_write_while_the_replica_lags(org):
    with replay_paused():
        with org_scope(org.pk):
            Agent.objects.create(name="fresh")
            with CaptureQueriesContext(connections["default"]) as on_primary:
                assert Agent.objects.filter(name="fresh").exists()
            assert len(on_primary.captured_queries) == 1
        # Everyone else reads the lagging replica (still under DB_REPLICA_MAX_LAG): not there yet.
        with CaptureQueriesContext(connections[REPLICA]) as on_replica:
            assert another_request(lambda: _names(org)) == []
        assert len(on_replica.captured_queries) == 1
        (status,) = replicas.monitor.statuses(refresh=True)
        assert status.in_use and status.replay_paused
    wait_caught_up()
    assert another_request(lambda: _names(org)) == ["fresh"]


def test_an_async_writer_reads_its_write(org):
    async def write_then_read():
        async with org_scope(org.pk):
            await Agent.objects.acreate(name="async")
            found = await Agent.objects.filter(name="async").aexists()
        await sync_to_async(connections.close_all)()  # the ORM's worker thread keeps one open
        return found

    with replay_paused():
        assert another_request(lambda: asyncio.run(write_then_read())) is True
        assert another_request(lambda: _names(org)) == []


def test_a_lagging_replica_is_skipped(org, settings):
    settings.DB_REPLICA_MAX_LAG = 0.5
    settings.DB_REPLICA_STICKY_SECONDS = 1.0
    with replay_paused():
        another_request(lambda: Agent.all_orgs.create(org=org, name="late"))
        time.sleep(1.0)
        (status,) = replicas.monitor.statuses(refresh=True)
        assert not status.in_use and status.reachable
        assert status.lag_s > 0.5 and status.reason == f"lag {status.lag_s:g} s over DB_REPLICA_MAX_LAG=0.5"
        with CaptureQueriesContext(connections[REPLICA]) as on_replica:
            assert another_request(lambda: _names(org)) == ["late"]  # from the primary
        assert not on_replica.captured_queries
        report = build_report()
        (shown,) = report["checks"]["replicas"]
        assert (shown["alias"], shown["in_use"], shown["reachable"]) == (REPLICA, False, True)
        assert {
            "check": "replicas",
            "level": "warning",
            "message": f"read replica {REPLICA} skipped: {shown['reason']}",
        } in report["alerts"]
        assert report["healthy"] is True
    wait_caught_up()
    (status,) = replicas.monitor.statuses(refresh=True)
    assert status.in_use and status.lag_s == 0.0


def _replica_script(*args):
    result = subprocess.run(
        [str(BASE / "scripts" / "start-replica"), *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_stopped_replica_is_skipped(org):
    with org_scope(org.pk):
        Agent.objects.create(name="kept")
    wait_caught_up()
    _replica_script("stop-replica")
    try:
        (status,) = replicas.monitor.statuses(refresh=True)
        assert (status.reachable, status.in_use, status.reason) == (False, False, "unreachable")
        assert another_request(lambda: _names(org)) == ["kept"]  # from the primary, at once
        report = build_report()
        assert report["healthy"] is True and report["checks"]["replicas"][0]["reason"] == "unreachable"
    finally:
        _replica_script()
    wait_caught_up()
    (status,) = replicas.monitor.statuses(refresh=True)
    assert status.in_use
    with CaptureQueriesContext(connections[REPLICA]) as on_replica:
        assert another_request(lambda: _names(org)) == ["kept"]
    assert len(on_replica.captured_queries) == 1


def test_nothing_is_written_to_the_replica(org):
    def read():
        with org_scope(org.pk):
            return sorted(Agent.objects.values_list("name", "status"))

    with (
        CaptureQueriesContext(connections[REPLICA]) as on_replica,
        CaptureQueriesContext(connections["default"]) as on_primary,
    ):
        for step in range(3):
            another_request(read)
            wait_caught_up()
            replicas.monitor.statuses(refresh=True)

            def write():
                with org_scope(org.pk):
                    agent = Agent.objects.create(name=f"a{step}")
                    agent.status = "published"
                    agent.save()
                    Agent.objects.filter(pk=agent.pk).update(goal="updated")
                    Agent.objects.get_or_create(name=f"a{step}", defaults={"status": "draft"})
                    Agent.objects.update_or_create(name=f"b{step}", defaults={"status": "draft"})
                    Agent.objects.bulk_create([Agent(name=f"c{step}"), Agent(name=f"d{step}")])
                    Agent.objects.filter(name=f"d{step}").delete()
                    with transaction.atomic():
                        list(Agent.objects.select_for_update().filter(name=f"c{step}"))
                        list(Agent.objects.filter(name=f"b{step}"))

            another_request(write)
    statements = [q["sql"] for q in on_replica.captured_queries]
    assert len(statements) >= 3  # the reads did go to the replica
    assert all(sql.lstrip().upper().startswith("SELECT") for sql in statements), statements
    writes = [
        q["sql"]
        for q in on_primary.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert any("audit_logs" in sql for sql in writes) and any('"agents"' in sql for sql in writes)
    wait_caught_up()
    assert another_request(read) == sorted(
        Agent.all_orgs.using("default").filter(org=org).values_list("name", "status")
    )


def test_a_browser_that_just_signed_in_stays_signed_in(org, make_user, client):
    from django.test import Client

    user = make_user(org, email="staff@example.com", password="a long enough password 1", is_staff=True)
    wait_caught_up()

    def same_session_without_marker():
        other = Client()
        other.cookies["sessionid"] = client.cookies["sessionid"].value
        return other.get("/admin/")

    with replay_paused():
        signed_in = client.post(
            "/admin/login/", {"username": user.email, "password": "a long enough password 1", "next": "/admin/"}
        )
        assert signed_in.status_code == 302 and signed_in["Location"] == "/admin/"
        assert COOKIE_NAME in signed_in.cookies
        assert client.get("/admin/").status_code == 200  # the new session row is read from the primary
        # Sessions are credential rows, read from the primary whoever asks: a request without the
        # marker (another worker's, a lost cookie) finds the row the replica has not replayed yet.
        assert same_session_without_marker().status_code == 200
    wait_caught_up()
    assert same_session_without_marker().status_code == 200
    assert client.get("/admin/").status_code == 200


def test_a_forked_worker_measures_on_its_own_connections():
    import os

    (status,) = replicas.monitor.statuses(refresh=True)
    assert status.in_use
    parent_sessions = {conn.info.backend_pid for conn in replicas.monitor._conns.values()}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a worker of a preloading server
        try:
            (child,) = replicas.monitor.statuses(refresh=True)
            mine = {conn.info.backend_pid for conn in replicas.monitor._conns.values()}
            os.write(write, b"ok" if child.in_use and not mine & parent_sessions else b"shared")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 10) == b"ok"
    (status,) = replicas.monitor.statuses(refresh=True)  # the parent's sessions still work
    assert status.in_use
    assert {conn.info.backend_pid for conn in replicas.monitor._conns.values()} == parent_sessions


def test_per_connection_hooks_apply_to_replica_connections():
    from operations.monitoring import QueryMonitor

    def hooks(alias):
        connections[alias].ensure_connection()
        return [getattr(w, "marker", type(w).__name__) for w in connections[alias].execute_wrappers]

    # The query monitor is installed on every alias when its connection opens; per-connection
    # settings (row-level security among them) go the same way.
    assert QueryMonitor.marker in hooks(REPLICA)
    assert hooks(REPLICA) == hooks("default")
    assert connections[REPLICA].settings_dict["OPTIONS"] == connections["default"].settings_dict["OPTIONS"]


def test_the_replica_benchmark_runs_end_to_end():
    import json
    import os
    import sys

    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "DATABASE_"))}
    env["DB_NAME"] = connections["default"].settings_dict["NAME"] + "_bench"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/replica_benchmark.py",
            "--seconds",
            "0.5",
            "--workers",
            "1",
            "--messages",
            "300",
            "--audit",
            "300",
            "--write-rate",
            "5",
            "--json",
        ],
        cwd=BASE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"]["messages"] == 300 and summary["rows"]["agents"] == 2000
    alone, replicated = summary["results"]
    assert (alone["mode"], replicated["mode"]) == ("primary alone", "primary + replica")
    # Figures are not checked (a loaded machine may fit no admin page in a window), only that both modes read.
    assert (
        set(alone["per_second"])
        == set(replicated["per_second"])
        == {"newest messages", "agent list", "admin audit log", "admin agents"}
    )
    assert sum(alone["per_second"].values()) > 0 and sum(replicated["per_second"].values()) > 0
    # Where the reads went: the replica only in the second mode (beyond the lag sampler's checks).
    assert replicated["transactions_replica"] > alone["transactions_replica"] + 10
    assert _raw("default", f"SELECT count(*) FROM pg_database WHERE datname = '{env['DB_NAME']}'", "postgres")[0] == 0
