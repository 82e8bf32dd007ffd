"""Slow queries (threshold 0), failed transactions and pool exhaustion, on the running backend."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.db import DatabaseError, connection, transaction

from operations import monitoring

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def counters():
    monitoring.reset_counters()
    yield monitoring
    monitoring.reset_counters()


def slow_events(shape_key=None):
    from security.models import SecurityEvent

    events = list(SecurityEvent.all_orgs.filter(event_type="slow_query").order_by("created_at"))
    if shape_key is not None:
        events = [e for e in events if e.details.get("shape_key") == shape_key]
    return events


def test_the_monitor_is_installed_on_the_connection(db):
    connection.ensure_connection()
    assert any(getattr(w, "marker", None) == monitoring.QueryMonitor.marker for w in connection.execute_wrappers)
    assert monitoring.install_on(connection) is False  # idempotent


def test_statement_shape_and_redaction():
    a = monitoring.statement_shape("SELECT * FROM t WHERE id IN (1, 2, 3) AND name = 'x''y' AND n > 2.5 LIMIT 21")
    b = monitoring.statement_shape("SELECT  *  FROM t WHERE id IN (7) AND name = 'other' AND n > 9 LIMIT 3")
    assert a == b == "SELECT * FROM t WHERE id IN (?) AND name = ? AND n > ? LIMIT ?"
    assert (
        monitoring.statement_shape('SELECT "t1"."col2" FROM "t1" WHERE "x" = %s')
        == 'SELECT "t1"."col2" FROM "t1" WHERE "x" = ?'
    )
    assert monitoring.statement_shape("INSERT INTO t VALUES (%s, %s), (%s, %s)") == "INSERT INTO t VALUES (?)"
    redacted = monitoring.redact_params(["s3cret-password", 42, None, b"\x00\x01", True])
    assert redacted == ["str(15)", "int", "None", "bytes(2)", "bool"]
    assert "s3cret" not in str(redacted)
    assert monitoring.redact_params({"a": "xy"}) == {"a": "str(2)"}
    assert monitoring.redact_params([("a", 1), ("b", 2)], many=True) == {"rows": 2, "first": ["str(1)", "int"]}


@pytest.mark.django_db(transaction=True)
def test_slow_query_is_logged_counted_and_recorded_once_a_minute(
    settings, caplog, counters, make_org, make_user, client
):
    org = make_org("Slowpoke")
    user = make_user(org, is_staff=True)
    client.force_login(user)
    settings.DB_SLOW_QUERY_MS = 0
    caplog.set_level(logging.WARNING, logger="agentforge.slow_query")

    # A query inside a real request: organization and path come from the middleware.
    response = client.get("/health/?probe=1")
    assert response.status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "agentforge.slow_query"]
    assert lines, "no slow query logged at threshold 0"
    assert all("slow query:" in line and "threshold 0 ms" in line for line in lines)
    assert any(f"org={org.pk}" in line and "request=GET /health/" in line for line in lines), lines[:3]
    request_count = counters.snapshot()["slow_queries"]
    assert request_count >= len(lines) > 0

    # A statement with a secret parameter: logged with its type and length only.
    secret = "hunter2-very-secret"
    sql = "SELECT COUNT(*) FROM users WHERE email = %s"
    caplog.clear()
    for _ in range(3):
        with connection.cursor() as cursor:
            cursor.execute(sql, [secret])
            cursor.fetchone()
    mine = [r.getMessage() for r in caplog.records if "FROM users WHERE email = ?" in r.getMessage()]
    assert len(mine) == 3
    assert all(f"str({len(secret)})" in m and secret not in m for m in mine)
    snap = counters.snapshot()
    assert snap["slow_queries"] >= request_count + 3

    settings.DB_SLOW_QUERY_MS = 10**9  # the checks below are not themselves recorded
    key = monitoring.shape_key(monitoring.statement_shape(sql))
    events = slow_events(key)
    assert len(events) == 1, "three runs of one shape within a minute: one event"
    event = events[0]
    assert event.org_id is None  # no organization was active for this one
    assert event.details["params"] == [f"str({len(secret)})"]
    assert secret not in str(event.details)
    # The request's events carry the organization and the path.
    request_events = [e for e in slow_events() if e.details.get("request_path") == "/health/"]
    assert request_events and all(e.org_id == org.pk for e in request_events)

    # A minute later (the claim in the shared cache has expired), the same shape is recorded again.
    from django.core.cache import cache

    assert cache.delete(f"claim:slow-query-event:{key}")
    settings.DB_SLOW_QUERY_MS = 0
    with connection.cursor() as cursor:
        cursor.execute(sql, ["other@example.com"])
        cursor.fetchone()
    settings.DB_SLOW_QUERY_MS = 10**9
    assert len(slow_events(key)) == 2


@pytest.mark.django_db(transaction=True)
def test_recording_survives_inside_a_transaction(settings, counters):
    """The event goes in through a savepoint and never breaks the caller's transaction."""
    settings.DB_SLOW_QUERY_MS = 0
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 + %s", [1])
            assert cursor.fetchone()[0] == 2
            cursor.execute("SELECT 2 + %s", [1])
            assert cursor.fetchone()[0] == 3
    settings.DB_SLOW_QUERY_MS = 10**9
    assert counters.snapshot()["slow_query_events_recorded"] >= 1
    assert counters.snapshot()["slow_query_event_errors"] == 0


@pytest.mark.django_db(transaction=True)
def test_failed_transactions_are_counted(counters):
    before = counters.snapshot()["failed_transactions"]
    with pytest.raises(DatabaseError):
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM no_such_table_agentforge")
    from django.db import IntegrityError

    from accounts.models import Organization

    Organization.all_orgs.create(name="One", slug="dup-slug")
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            Organization.all_orgs.create(name="Two", slug="dup-slug")
    snap = counters.snapshot()
    assert snap["failed_transactions"] == before + 2
    assert snap["failed_by_class"].get("integrity") == 1
    assert snap["last_failure_at"] is not None


@pytest.mark.backends("postgresql")
@pytest.mark.django_db(transaction=True)
def test_pool_exhaustion_is_logged_clearly():
    """One pooled connection held by a thread, a second thread waits DB_POOL_TIMEOUT=1 s."""
    script = textwrap.dedent(
        """
        import threading, json
        import django
        django.setup()
        from django.db import connection, OperationalError
        from operations.health import build_report

        held, waited = threading.Event(), threading.Event()
        def hold():  # keeps the only pooled connection until the other thread has given up
            connection.ensure_connection()
            held.set()
            waited.wait(30)
            connection.close()
        t = threading.Thread(target=hold); t.start(); held.wait()
        outcome = {}
        def wait():
            try:
                connection.ensure_connection()
                outcome["error"] = None
            except OperationalError as exc:
                outcome["error"] = type(exc).__name__
        w = threading.Thread(target=wait); w.start(); w.join(); waited.set(); t.join()
        report = build_report()
        print(json.dumps({"outcome": outcome, "alerts": report["alerts"]}))
        """
    )
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.settings",
        DB_POOL_SIZE="1",
        DB_MAX_OVERFLOW="0",
        DB_POOL_TIMEOUT="1",
        DB_NAME=connection.settings_dict["NAME"],
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "database pool exhausted: waited 1." in proc.stderr
    assert "s for a connection (DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0)" in proc.stderr
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["outcome"]["error"] == "OperationalError"
    assert any(a["check"] == "pool" and "pool timeouts" in a["message"] for a in result["alerts"])
