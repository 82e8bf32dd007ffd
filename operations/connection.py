"""Connection checks shared by check_connection, dbhealth and /health/."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

from agentforge_site.replicas import direct_connect_params


@dataclass
class ConnectionReport:
    backend: str
    vendor: str
    database: str
    host: str
    ok: bool = False
    error: str = ""
    server_version: str = ""
    latency_ms: float | None = None
    pool: dict = field(default_factory=dict)
    applied_migrations: int = 0
    pending_migrations: list[str] = field(default_factory=list)


def describe_target(alias: str = DEFAULT_DB_ALIAS) -> tuple[str, str]:
    conn = connections[alias]
    s = conn.settings_dict
    host = f"{s.get('HOST')}:{s.get('PORT')}" if s.get("HOST") else "local file"
    return str(s.get("NAME")), host


def one_line_error(exc: BaseException) -> str:
    """The driver's message reduced to one line ("connection refused", "password authentication failed")."""
    args = getattr(exc, "args", ())
    if len(args) == 2 and isinstance(args[0], int):  # MySQLdb: (1045, "Access denied ...")
        return str(args[1])[:300]
    text = " ".join(str(exc).split())
    for marker in ("FATAL:", "ERROR:"):
        if marker in text:
            text = text.split(marker, 1)[1].strip()
    return text[:300] or type(exc).__name__


def server_version(conn) -> str:
    vendor = conn.vendor
    with conn.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute("SHOW server_version")
        elif vendor == "mysql":
            cursor.execute("SELECT VERSION()")
        elif vendor == "sqlite":
            cursor.execute("SELECT sqlite_version()")
        elif vendor == "microsoft":
            cursor.execute("SELECT CAST(SERVERPROPERTY('ProductVersion') AS varchar(50))")
        elif vendor == "oracle":
            cursor.execute("SELECT banner FROM v$version WHERE ROWNUM = 1")
        else:
            return "unknown"
        return str(cursor.fetchone()[0])


def pool_status(conn) -> dict:
    """Pool size, in use and waiting where the backend tells; persistent-connection facts otherwise."""
    pool = getattr(conn, "pool", None) if conn.vendor == "postgresql" else None
    if pool is not None:
        stats = pool.get_stats()
        size = stats.get("pool_size", 0)
        available = stats.get("pool_available", 0)
        return {
            "kind": "psycopg pool",
            "min_size": pool.min_size,
            "max_size": pool.max_size,
            "size": size,
            "in_use": size - available,
            "available": available,
            "waiting": stats.get("requests_waiting", 0),
            "timeouts": stats.get("requests_errors", 0),
            "connection_attempts": stats.get("connections_num", 0),
            "connection_failures": stats.get("connections_errors", 0),
        }
    if conn.vendor == "oracle" and conn.settings_dict.get("OPTIONS", {}).get("pool"):
        pool = getattr(conn, "pool", None)
        if pool is not None:
            return {"kind": "oracledb pool", "size": pool.opened, "in_use": pool.busy, "max_size": pool.max}
    return {
        "kind": "persistent connections",
        "conn_max_age": conn.settings_dict.get("CONN_MAX_AGE"),
        "health_checks": conn.settings_dict.get("CONN_HEALTH_CHECKS"),
    }


def measure_latency(conn, rounds: int = 3) -> float:
    """Best of a few ``SELECT 1`` round trips, in milliseconds."""
    best = None
    with conn.cursor() as cursor:
        for _ in range(rounds):
            start = time.perf_counter()
            cursor.execute("SELECT 1" + (" FROM DUAL" if conn.vendor == "oracle" else ""))
            cursor.fetchone()
            elapsed = (time.perf_counter() - start) * 1000
            best = elapsed if best is None else min(best, elapsed)
    return round(best, 3)


def probe(conn, timeout: int = 5) -> float | None:
    """Open and close one direct connection with a short timeout; return its time in ms.

    PostgreSQL (pooled or not) and MariaDB/MySQL only: for them an unreachable server
    would otherwise wait DB_POOL_TIMEOUT (30 s) in the pool or the driver. SQLite fails
    at once anyway; SQL Server and Oracle use their own driver timeouts (None returned).
    Raises the driver's exception when the server cannot be reached.
    """
    start = time.perf_counter()
    if conn.vendor == "postgresql":
        import psycopg

        psycopg.connect(**direct_connect_params(conn, timeout)).close()
    elif conn.vendor == "mysql":
        import MySQLdb

        params = dict(conn.get_connection_params())
        params["connect_timeout"] = timeout
        MySQLdb.connect(**params).close()
    else:
        return None
    return round((time.perf_counter() - start) * 1000, 3)


def check_connection(alias: str = DEFAULT_DB_ALIAS) -> ConnectionReport:
    conn = connections[alias]
    name, host = describe_target(alias)
    report = ConnectionReport(
        backend=conn.display_name if conn.vendor != "mysql" else "MySQL/MariaDB",
        vendor=conn.vendor,
        database=name,
        host=host,
    )
    try:
        probe(conn)
        conn.ensure_connection()
        report.server_version = server_version(conn)
        if conn.vendor == "mysql":
            report.backend = conn.display_name
        report.latency_ms = measure_latency(conn)
        report.pool = pool_status(conn)
        executor = MigrationExecutor(conn)
        targets = executor.loader.graph.leaf_nodes()
        report.pending_migrations = [f"{m.app_label}.{m.name}" for m, _ in executor.migration_plan(targets)]
        report.applied_migrations = len(executor.loader.applied_migrations)
        report.ok = True
    except Exception as exc:  # any driver error becomes one line
        report.error = one_line_error(exc)
    return report
