"""The health report shared by ``/health/`` and ``manage.py dbhealth``.

``build_report()`` returns a dictionary (see docs/operations.md for every field):

* ``status``: ``"ok"`` (healthy, no alert), ``"degraded"`` (healthy, with alerts) or
  ``"unhealthy"``; ``healthy`` is False, and /health/ answers 503, when the database is
  unreachable, the connection pool is exhausted right now, or migrations are pending.
* ``reasons``: why it is unhealthy, one short line each, without hosts or names.
* ``alerts``: the operations alerts (pool exhaustion, slow queries, failed transactions,
  storage over 80% of ``DB_STORAGE_QUOTA_MB``) plus dual-write failures.
* ``checks``: the per-check breakdown (database, pool, migrations, storage, queries,
  dual_write) and, with ``tables=N``, the N largest tables.

A dead server fails in seconds: before touching Django's (possibly pooled) connection,
``probe()`` opens one direct connection with a short connect timeout. Once a probe has failed,
``database_switch`` marks the database down in this process: /health/ and every request answer
503 at once, without waiting on the pool, until a probe a second later finds it back.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from agentforge_site.caching import cache_report
from agentforge_site.replicas import monitor, replica_aliases
from operations import monitoring
from operations.connection import measure_latency, one_line_error, pool_status, probe, server_version

STORAGE_ALERT_PCT = 80.0
BIG_TABLE_ROWS = 10_000


# --- the per-process "database down" switch ------------------------------------------------------

# How long a process trusts "down" before one request probes again.
DOWN_RECHECK_S = 1.0
# libpq's smallest connect timeout; a refused connection fails at once anyway.
RECHECK_TIMEOUT_S = 2
# How long a request waits for another thread's probe before it answers 503 anyway.
PROBE_WAIT_S = 0.5


class DatabaseSwitch:
    """This process's belief that the default database is down, so requests stop waiting on it.

    Under load, a dead server kept every worker thread waiting DB_POOL_TIMEOUT for a connection,
    and /health/ queued behind them. Once a probe fails, ``is_down()`` is True without touching
    the database: requests answer 503 at once (``DatabaseDownMiddleware``) and /health/ says so.
    After DOWN_RECHECK_S, the first caller probes again (the others keep answering 503) and a
    success flips the switch back. Backends without a probe (SQLite, SQL Server, Oracle) are
    never marked down.
    """

    def __init__(self, alias: str = DEFAULT_DB_ALIAS):
        self.alias = alias
        self.down_since: float | None = None  # time.time() of the first failed probe
        self.error = ""
        self._recheck_at = 0.0  # time.monotonic()
        self._probing = threading.Lock()

    def is_down(self) -> bool:
        if self.down_since is None:
            return False
        if time.monotonic() < self._recheck_at:
            return True
        if self._probing.acquire(blocking=False):
            try:
                return not self._probe()
            finally:
                self._probing.release()
        # Another thread is probing: its answer is this request's too. Waiting briefly for it
        # beats a 503 from a process whose database may already be back (a refused
        # connection fails the probe at once; a live server answers in milliseconds).
        if self._probing.acquire(timeout=PROBE_WAIT_S):
            self._probing.release()
        return self.down_since is not None

    def confirm_down(self) -> bool:
        """After a database error: probe (one thread at a time) and mark down if unreachable."""
        if not self._probing.acquire(blocking=False):
            return self.down_since is not None  # another thread is probing right now
        try:
            return not self._probe()
        finally:
            self._probing.release()

    def _probe(self) -> bool:
        try:
            probe(connections[self.alias], RECHECK_TIMEOUT_S)
        except Exception as exc:
            self.mark_down(one_line_error(exc))
            return False
        self.mark_up()
        return True

    def mark_down(self, error: str) -> None:
        if self.down_since is None:
            self.down_since = time.time()
        self.error = error
        self._recheck_at = time.monotonic() + DOWN_RECHECK_S

    def mark_up(self) -> None:
        self.down_since = None
        self.error = ""


database_switch = DatabaseSwitch()


# --- storage ------------------------------------------------------------------------------------


def storage_used_bytes(conn) -> tuple[int, str]:
    """Bytes the database uses, and how that was measured."""
    vendor = conn.vendor
    with conn.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute("SELECT pg_database_size(current_database())")
            return int(cursor.fetchone()[0]), "pg_database_size"
        if vendor == "mysql":
            cursor.execute(
                "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
                "WHERE table_schema = DATABASE()"
            )
            return int(cursor.fetchone()[0]), "information_schema.tables data_length+index_length"
        if vendor == "sqlite":
            cursor.execute("PRAGMA page_count")
            pages = int(cursor.fetchone()[0])
            cursor.execute("PRAGMA page_size")
            return pages * int(cursor.fetchone()[0]), "page_count*page_size"
        if vendor == "microsoft":
            cursor.execute("SELECT CAST(SUM(CAST(size AS bigint)) * 8192 AS bigint) FROM sys.database_files")
            return int(cursor.fetchone()[0] or 0), "sys.database_files"
        if vendor == "oracle":
            cursor.execute("SELECT NVL(SUM(bytes), 0) FROM user_segments")
            return int(cursor.fetchone()[0] or 0), "user_segments"
    raise NotImplementedError(vendor)


def storage_check(conn) -> dict:
    used, method = storage_used_bytes(conn)
    quota_mb = float(getattr(settings, "DB_STORAGE_QUOTA_MB", 0) or 0)
    result = {
        "used_bytes": used,
        "used_mb": round(used / 1024 / 1024, 2),
        "quota_mb": quota_mb or None,
        "used_pct": None,
        "alert_at_pct": STORAGE_ALERT_PCT,
        "method": method,
        "ok": True,
    }
    if quota_mb > 0:
        pct = used / (quota_mb * 1024 * 1024) * 100
        result["used_pct"] = round(pct, 1)
        result["ok"] = pct < STORAGE_ALERT_PCT
    return result


# --- tables and indexes -------------------------------------------------------------------------


def table_sizes(conn, limit: int = 10) -> list[dict]:
    """The largest tables: name, bytes (data + indexes) and rows (an estimate where noted)."""
    vendor = conn.vendor
    rows: list[dict] = []
    with conn.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(
                "SELECT relname, pg_total_relation_size(relid), pg_relation_size(relid), n_live_tup "
                "FROM pg_stat_user_tables ORDER BY 2 DESC, 1 LIMIT %s",
                [limit],
            )
            rows = [
                {"table": t, "bytes": int(total), "data_bytes": int(data), "rows_estimate": int(live)}
                for t, total, data, live in cursor.fetchall()
            ]
        elif vendor == "mysql":
            cursor.execute(
                "SELECT table_name, data_length + index_length, data_length, table_rows "
                "FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' "
                "ORDER BY 2 DESC, 1 LIMIT %s",
                [limit],
            )
            rows = [
                {"table": t, "bytes": int(total or 0), "data_bytes": int(data or 0), "rows_estimate": int(n or 0)}
                for t, total, data, n in cursor.fetchall()
            ]
        elif vendor == "sqlite":
            try:
                cursor.execute(
                    "SELECT m.tbl_name, SUM(s.pgsize) FROM dbstat s JOIN sqlite_master m ON m.name = s.name "
                    "WHERE m.tbl_name NOT LIKE 'sqlite_%%' GROUP BY m.tbl_name ORDER BY 2 DESC, 1 LIMIT %s",
                    [limit],
                )
                sized = cursor.fetchall()
            except Exception:  # SQLite built without the dbstat table
                sized = [(t, None) for t in conn.introspection.table_names(cursor)][:limit]
            for table, size in sized:
                cursor.execute(f"SELECT COUNT(*) FROM {conn.ops.quote_name(table)}")
                rows.append(
                    {
                        "table": table,
                        "bytes": int(size) if size is not None else None,
                        "rows": int(cursor.fetchone()[0]),
                    }
                )
        elif vendor == "microsoft":
            cursor.execute(
                "SELECT TOP (%s) t.name, SUM(a.total_pages) * 8192, SUM(CASE WHEN a.type = 1 THEN p.rows ELSE 0 END) "
                "FROM sys.tables t JOIN sys.partitions p ON p.object_id = t.object_id "
                "JOIN sys.allocation_units a ON a.container_id = p.partition_id "
                "GROUP BY t.name ORDER BY 2 DESC",
                [limit],
            )
            rows = [{"table": t, "bytes": int(b or 0), "rows_estimate": int(n or 0)} for t, b, n in cursor.fetchall()]
        elif vendor == "oracle":
            cursor.execute(
                "SELECT * FROM (SELECT segment_name, SUM(bytes) FROM user_segments WHERE segment_type LIKE 'TABLE%%' "
                "GROUP BY segment_name ORDER BY 2 DESC) WHERE ROWNUM <= %s",
                [limit],
            )
            rows = [{"table": t, "bytes": int(b or 0)} for t, b in cursor.fetchall()]
    return rows


def index_efficiency(conn, big_rows: int = BIG_TABLE_ROWS) -> dict:
    """Unused indexes and sequential scans on big tables (PostgreSQL and MariaDB/MySQL).

    Statistics count since the server (or ``pg_stat_reset()``) started: an index unused
    over a short window is not necessarily useless.
    """
    if conn.vendor == "postgresql":
        return _pg_index_efficiency(conn, big_rows)
    if conn.vendor == "mysql":
        return _mysql_index_efficiency(conn, big_rows)
    return {
        "available": False,
        "note": f"index statistics are reported on PostgreSQL and MariaDB/MySQL only ({conn.vendor})",
    }


def _pg_index_efficiency(conn, big_rows: int) -> dict:
    with conn.cursor() as cursor:
        cursor.execute("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()")
        reset = cursor.fetchone()[0]
        cursor.execute(
            "SELECT s.relname, s.indexrelname, s.idx_scan, pg_relation_size(s.indexrelid) "
            "FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid "
            "WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary "
            "ORDER BY 4 DESC, 1, 2"
        )
        unused = [{"table": t, "index": i, "scans": int(n), "bytes": int(b)} for t, i, n, b in cursor.fetchall()]
        cursor.execute(
            "SELECT relname, seq_scan, seq_tup_read, COALESCE(idx_scan, 0), n_live_tup FROM pg_stat_user_tables "
            "WHERE n_live_tup >= %s AND seq_scan > 0 AND seq_scan >= COALESCE(idx_scan, 0) "
            "ORDER BY seq_tup_read DESC LIMIT 20",
            [big_rows],
        )
        seq = [
            {
                "table": t,
                "seq_scans": int(s),
                "rows_read_by_seq_scans": int(r),
                "index_scans": int(i),
                "rows_estimate": int(n),
            }
            for t, s, r, i, n in cursor.fetchall()
        ]
    return {
        "available": True,
        "source": "pg_stat_user_indexes, pg_stat_user_tables",
        "stats_since": reset.isoformat() if reset else "server start",
        "big_table_rows": big_rows,
        "unused_indexes": unused,
        "seq_scans_on_big_tables": seq,
    }


def _mysql_variable(cursor, name: str) -> str:
    cursor.execute("SHOW VARIABLES LIKE %s", [name])
    row = cursor.fetchone()
    return str(row[1]).upper() if row else ""


def _mysql_index_efficiency(conn, big_rows: int) -> dict:
    result: dict = {"available": False, "big_table_rows": big_rows, "unused_indexes": [], "seq_scans_on_big_tables": []}
    with conn.cursor() as cursor:
        cursor.execute(
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('Select_scan', 'Select_full_join', 'Handler_read_rnd_next', 'Uptime')"
        )
        result["server_counters"] = {name: int(value) for name, value in cursor.fetchall()}
        userstat = _mysql_variable(cursor, "userstat") in ("ON", "1")
        perf = _mysql_variable(cursor, "performance_schema") in ("ON", "1")
        # Secondary indexes of our schema (not PRIMARY, not unique: those enforce constraints).
        cursor.execute(
            "SELECT table_name, index_name FROM information_schema.statistics "
            "WHERE table_schema = DATABASE() AND index_name <> 'PRIMARY' AND non_unique = 1 "
            "GROUP BY table_name, index_name"
        )
        secondary = {(t, i) for t, i in cursor.fetchall()}
        cursor.execute(
            "SELECT table_name, table_rows FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' AND table_rows >= %s",
            [big_rows],
        )
        big = {t: int(n) for t, n in cursor.fetchall()}
        if userstat:
            cursor.execute(
                "SELECT table_name, index_name, rows_read FROM information_schema.index_statistics "
                "WHERE table_schema = DATABASE()"
            )
            used = {(t, i): int(r) for t, i, r in cursor.fetchall()}
            result["unused_indexes"] = [{"table": t, "index": i} for t, i in sorted(secondary - set(used))]
            cursor.execute(
                "SELECT table_name, rows_read FROM information_schema.table_statistics WHERE table_schema = DATABASE()"
            )
            table_reads = {t: int(r) for t, r in cursor.fetchall()}
            for table, rows in sorted(big.items()):
                by_index = sum(r for (t, _), r in used.items() if t == table)
                scanned = max(table_reads.get(table, 0) - by_index, 0)
                if scanned:
                    result["seq_scans_on_big_tables"].append(
                        {"table": table, "rows_read_without_index": scanned, "rows_estimate": rows}
                    )
            result.update(available=True, source="information_schema.INDEX_STATISTICS / TABLE_STATISTICS (userstat=ON)")
        elif perf:
            cursor.execute(
                "SELECT object_name, index_name, count_star FROM performance_schema.table_io_waits_summary_by_index_usage "
                "WHERE object_schema = DATABASE()"
            )
            stats = cursor.fetchall()
            used = {(t, i) for t, i, n in stats if i is not None and int(n) > 0}
            result["unused_indexes"] = [{"table": t, "index": i} for t, i in sorted(secondary - used)]
            for table, index, count in stats:
                if index is None and table in big and int(count) > 0:
                    result["seq_scans_on_big_tables"].append(
                        {"table": table, "full_scan_row_reads": int(count), "rows_estimate": big[table]}
                    )
            result.update(available=True, source="performance_schema.table_io_waits_summary_by_index_usage")
        else:
            result["note"] = (
                "per-index usage is not collected: enable it with SET GLOBAL userstat=ON (MariaDB) or "
                "performance_schema=ON in the server configuration; server_counters show scans since start"
            )
    return result


# --- other components -------------------------------------------------------------------------


def dual_write_failures() -> int:
    """The dual-write store's failure counter, 0 when that store is not installed."""
    try:
        from legacy.store import dual_write_failures as counter
    except Exception:
        return 0
    try:
        return int(counter())
    except Exception:
        return 0


def pending_migrations(conn) -> list[str]:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(conn)
    targets = executor.loader.graph.leaf_nodes()
    return [f"{m.app_label}.{m.name}" for m, _ in executor.migration_plan(targets)]


def _pool_exhausted(pool: dict) -> bool:
    if "waiting" not in pool or "max_size" not in pool:
        return False
    return pool.get("waiting", 0) > 0 and pool.get("available", 0) == 0 and pool.get("size", 0) >= pool["max_size"]


def _iso(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat() if ts else None


# --- the report ----------------------------------------------------------------------------------


def build_report(alias: str = DEFAULT_DB_ALIAS, tables: int = 0) -> dict:
    """Check the database and this process's counters; never raises for a database error."""
    started = time.perf_counter()
    conn = connections[alias]
    now = time.time()
    reasons: list[str] = []
    alerts: list[dict] = []
    checks: dict = {}

    database: dict = {"ok": False, "vendor": conn.vendor}
    checks["database"] = database
    switch = database_switch if alias == database_switch.alias else None
    if switch is not None and switch.is_down():
        # Known down in this process: answer now, the switch probes again once a second.
        database["error"] = switch.error
        database["down_since"] = _iso(switch.down_since)
    else:
        try:
            connect_ms = probe(conn)
            if connect_ms is not None:
                database["connect_ms"] = connect_ms
        except Exception as exc:
            database["error"] = one_line_error(exc)
            if switch is not None:
                switch.mark_down(database["error"])

    # Pool status comes from the pool object, without taking a connection from it.
    try:
        checks["pool"] = pool_status(conn)
    except Exception as exc:
        checks["pool"] = {"error": one_line_error(exc)}
    pool = checks["pool"]
    exhausted = _pool_exhausted(pool)
    pool["ok"] = not exhausted
    if exhausted:
        # An alert, not a 503: requests still get answered (they wait DB_POOL_TIMEOUT at most),
        # and a load balancer taking a busy server out of rotation would only load the others.
        alerts.append(
            {
                "check": "pool",
                "level": "critical",
                "message": f"connection pool exhausted: {pool['waiting']} requests waiting, "
                f"{pool['in_use']} of {pool['max_size']} connections in use",
            }
        )

    counters = monitoring.snapshot()
    shared = counters["all_workers"]
    if shared:
        # Another worker's recent slow query, failure or pool timeout is this server's too.
        for name, last in (
            ("slow_queries", "last_slow_query_at"),
            ("failed_transactions", "last_failure_at"),
            ("pool_timeouts", "last_pool_timeout_at"),
        ):
            if (shared.get(f"last_{name}_at") or 0) > (counters[last] or 0):
                counters[last] = shared[f"last_{name}_at"]
    if counters["last_pool_timeout_at"] and now - counters["last_pool_timeout_at"] < monitoring.RECENT_WINDOW_S:
        alerts.append(
            {
                "check": "pool",
                "level": "critical",
                "message": f"{counters['pool_timeouts']} pool timeouts since start, the last at "
                f"{_iso(counters['last_pool_timeout_at'])}: {counters['last_pool_timeout_message']}",
            }
        )
    pool["timeouts_since_start"] = counters["pool_timeouts"]

    if "error" not in database and not exhausted:
        try:
            conn.ensure_connection()
            database["server_version"] = server_version(conn)
            database["latency_ms"] = measure_latency(conn)
            database["ok"] = True
        except Exception as exc:
            database["error"] = one_line_error(exc)
    if not database["ok"] and "error" in database:
        reasons.append("database unreachable")
        alerts.append({"check": "database", "level": "critical", "message": "database unreachable"})

    if database["ok"]:
        try:
            pending = pending_migrations(conn)
            checks["migrations"] = {"ok": not pending, "pending": len(pending), "pending_names": pending}
            if pending:
                reasons.append(f"{len(pending)} migrations pending")
                alerts.append(
                    {
                        "check": "migrations",
                        "level": "critical",
                        "message": f"{len(pending)} migrations pending: run manage.py migrate",
                    }
                )
        except Exception as exc:
            checks["migrations"] = {"ok": False, "error": one_line_error(exc)}
            reasons.append("migration state unreadable")
        try:
            storage = storage_check(conn)
            checks["storage"] = storage
            if not storage["ok"]:
                alerts.append(
                    {
                        "check": "storage",
                        "level": "critical" if storage["used_pct"] >= 100 else "warning",
                        "message": f"storage at {storage['used_pct']}% of DB_STORAGE_QUOTA_MB="
                        f"{storage['quota_mb']:g} ({storage['used_mb']} MB used)",
                    }
                )
        except Exception as exc:
            checks["storage"] = {"ok": False, "error": one_line_error(exc)}
        if tables:
            try:
                checks["tables"] = table_sizes(conn, tables)
            except Exception as exc:
                checks["tables"] = {"error": one_line_error(exc)}

    threshold = monitoring.slow_query_threshold_ms()
    recent_slow = counters["last_slow_query_at"] and now - counters["last_slow_query_at"] < monitoring.RECENT_WINDOW_S
    recent_failed = counters["last_failure_at"] and now - counters["last_failure_at"] < monitoring.RECENT_WINDOW_S
    checks["queries"] = {
        "ok": not recent_slow and not recent_failed,
        "since": counters["since"],
        "slow_query_threshold_ms": threshold,
        "slow_queries": counters["slow_queries"],
        "slow_query_max_ms": counters["slow_query_max_ms"],
        "last_slow_query_at": _iso(counters["last_slow_query_at"]),
        "recent_slow_queries": counters["recent_slow_queries"][-5:],
        "failed_transactions": counters["failed_transactions"],
        "failed_by_class": counters["failed_by_class"],
        "last_failed_transaction_at": _iso(counters["last_failure_at"]),
        "all_workers": shared,
    }
    if recent_slow:
        alerts.append(
            {
                "check": "queries",
                "level": "warning",
                "message": f"{counters['slow_queries']} queries over {threshold:g} ms since start "
                f"(slowest {counters['slow_query_max_ms']:g} ms), the last at {_iso(counters['last_slow_query_at'])}",
            }
        )
    if recent_failed:
        alerts.append(
            {
                "check": "queries",
                "level": "warning",
                "message": f"{counters['failed_transactions']} failed transactions since start, "
                f"the last at {_iso(counters['last_failure_at'])}",
            }
        )

    if replica_aliases():
        # A skipped replica is an alert, not a reason: the primary serves its reads.
        checks["replicas"] = [status.as_dict() for status in monitor.statuses(refresh=True)]
        for replica in checks["replicas"]:
            if not replica["in_use"]:
                alerts.append(
                    {
                        "check": "replicas",
                        "level": "warning",
                        "message": f"read replica {replica['alias']} skipped: {replica['reason']}",
                    }
                )

    # A cache that is down slows requests, never fails them: an alert, not a reason.
    checks["cache"] = cache_report()
    if not checks["cache"]["available"]:
        alerts.append(
            {
                "check": "cache",
                "level": "warning",
                "message": f"cache unavailable, running uncached: {checks['cache']['last_error']}",
            }
        )

    failures = dual_write_failures()
    checks["dual_write"] = {"ok": failures == 0, "failures": failures}
    if failures:
        alerts.append(
            {
                "check": "dual_write",
                "level": "warning",
                "message": f"{failures} dual-write failures since start (JSON and database may differ)",
            }
        )

    healthy = not reasons
    return {
        "status": "unhealthy" if not healthy else ("degraded" if alerts else "ok"),
        "healthy": healthy,
        "reasons": reasons,
        "alerts": alerts,
        "checked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "checks": checks,
    }


PUBLIC_KEYS = ("status", "healthy", "reasons", "alerts", "checked_at")


def public_view(report: dict) -> dict:
    """What an anonymous caller (a load balancer) sees: status, reasons and alert messages."""
    return {key: report[key] for key in PUBLIC_KEYS}
