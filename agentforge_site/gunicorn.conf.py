"""gunicorn's settings for scripts/serve and the container, from the environment.

WSGI with threaded workers (gthread): the admin's views are synchronous, and under ASGI every
one of them would queue for the worker's single sync thread (benchmarks/serve_benchmark.py
measures both; docs/deploying.md has the figures). Each worker process has its own psycopg pool
(DB_POOL_SIZE / DB_MAX_OVERFLOW per worker), so size it to WEB_THREADS, not to the whole server.
"""

import logging
import os

from agentforge_site import load_env_file

# The same .env as the application's settings, so BIND and WEB_* may live there too.
load_env_file()


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"configuration error: {name}: expected a whole number of at least 1, got {raw!r}")
    return int(raw)


bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = _int("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1))
threads = _int("WEB_THREADS", 4)
worker_class = "gthread"
# A request still running after this many seconds gets its worker restarted (hung, not slow).
timeout = _int("WEB_TIMEOUT", 30)
graceful_timeout = 20
keepalive = 5
# The heartbeat file on a memory file system: a container's overlay disk can stall it.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = "-" if os.environ.get("WEB_ACCESS_LOG", "true").lower() in ("1", "true", "yes", "on") else None
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms request_id=%({x-request-id}o)s'
errorlog = "-"
# No runtime control socket: it lives in $HOME, shared by every gunicorn of the user.
control_socket_disable = True


def worker_exit(server, worker):
    """Log this worker's connection-pool counters (waits, timeouts, lost connections) on exit."""
    try:
        from django.db import connections

        conn = connections["default"]
        # Django creates the pool on first use; asking conn.pool would create one just to report it.
        pool = getattr(type(conn), "_connection_pools", {}).get(conn.alias) if conn.vendor == "postgresql" else None
    except Exception:  # Django never started in this worker
        return
    if pool is None:
        return
    stats = pool.get_stats()
    logging.getLogger("agentforge.serve").info(
        "pool stats pid=%s requests=%s waited=%s wait_ms=%s timeouts=%s connections=%s lost=%s",
        worker.pid,
        stats.get("requests_num", 0),
        stats.get("requests_queued", 0),
        stats.get("requests_wait_ms", 0),
        stats.get("requests_errors", 0),
        stats.get("connections_num", 0),
        stats.get("connections_lost", 0),
    )
