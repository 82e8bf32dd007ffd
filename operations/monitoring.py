"""Query monitoring: slow queries, failed transactions and pool exhaustion, counted per process.

Installed by ``OperationsConfig.ready()`` on every backend:

* an ``execute_wrapper`` on every database connection (added when a connection opens,
  through the ``connection_created`` signal, and on connections already open at start-up)
  times each statement. A statement slower than ``DB_SLOW_QUERY_MS`` is logged on the
  ``agentforge.slow_query`` logger with its duration, its *shape* (the SQL with literals
  and numbers replaced by ``?``), its parameters redacted to their types and lengths, the
  active organization and the request path; it is counted, and (for SELECT, INSERT, UPDATE,
  DELETE, WITH, MERGE, REPLACE: not transaction control, DDL or TRUNCATE) recorded as a
  ``SecurityEvent(event_type="slow_query")`` at most once a minute per statement shape.
* every statement that raises a database error is counted as a failed transaction: the
  error aborts the transaction it ran in (or, in autocommit mode, its own implicit
  transaction; inside ``atomic()`` with a savepoint, the savepoint). The counters split
  them by error class (integrity, operational, programming, other).
* a PostgreSQL pool that cannot hand out a connection within ``DB_POOL_TIMEOUT``
  (psycopg_pool's ``PoolTimeout``) is logged on ``agentforge.db_pool`` as
  "database pool exhausted: waited N s for a connection (DB_POOL_SIZE=..., DB_MAX_OVERFLOW=...)"
  and counted; ``/health/`` turns it into an alert for five minutes.

Counters live in this process and start at zero when the process starts; ``snapshot()``
reads them. With a shared cache (``CACHE_URL=redis://…``) the slow-query, failed-transaction
and pool-timeout counts are also kept there for all workers (``snapshot()["all_workers"]``),
and the once-a-minute event per statement shape holds across workers too.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import decimal
import hashlib
import logging
import re
import threading
import time
import uuid
from collections import deque

from django.conf import settings
from django.db import DatabaseError, IntegrityError, OperationalError, ProgrammingError

from agentforge_site import caching
from operations.connection import pool_status

slow_logger = logging.getLogger("agentforge.slow_query")
pool_logger = logging.getLogger("agentforge.db_pool")
error_logger = logging.getLogger("agentforge.db_errors")

EVENT_INTERVAL_S = 60.0  # one SecurityEvent per statement shape per minute
RECENT_WINDOW_S = 300.0  # "recent" for the /health/ alerts
_MAX_SQL_CHARS = 2000

# True while this module writes its own SecurityEvent: those statements are not timed,
# so recording a slow query can never recurse into recording another one.
_recording: contextvars.ContextVar[bool] = contextvars.ContextVar("agentforge_slow_query_recording", default=False)


class _Counters:
    """Process-wide counters, guarded by one lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.started_at = time.time()
            self.slow_queries = 0
            self.slow_query_max_ms = 0.0
            self.last_slow_query_at: float | None = None
            self.recent_slow: deque = deque(maxlen=20)  # (at, ms, shape) for staff
            self.failed_transactions = 0
            self.failed_by_class: dict[str, int] = {}
            self.last_failure_at: float | None = None
            self.pool_timeouts = 0
            self.last_pool_timeout_at: float | None = None
            self.last_pool_timeout_message = ""
            self.events_recorded = 0
            self.event_errors = 0
            self._last_event_at: dict[str, float] = {}

    def add_slow(self, ms: float, shape: str) -> None:
        now = time.time()
        with self._lock:
            self.slow_queries += 1
            self.slow_query_max_ms = max(self.slow_query_max_ms, ms)
            self.last_slow_query_at = now
            self.recent_slow.append((now, round(ms, 1), shape[:300]))
        _count_shared("slow_queries")

    def add_failure(self, kind: str) -> None:
        with self._lock:
            self.failed_transactions += 1
            self.failed_by_class[kind] = self.failed_by_class.get(kind, 0) + 1
            self.last_failure_at = time.time()
        _count_shared("failed_transactions")

    def add_pool_timeout(self, message: str) -> None:
        with self._lock:
            self.pool_timeouts += 1
            self.last_pool_timeout_at = time.time()
            self.last_pool_timeout_message = message
        _count_shared("pool_timeouts")

    def claim_event(self, shape_key: str) -> bool:
        """True when no event was recorded for this shape in the last minute (and claim it),
        by any worker sharing the cache, or by this process when there is none."""
        token = _recording.set(True)
        try:
            shared = caching.claim(f"slow-query-event:{shape_key}", EVENT_INTERVAL_S)
        except Exception:  # bookkeeping never breaks the query it watches
            shared = None
        finally:
            _recording.reset(token)
        if shared is not None:
            return shared
        now = time.monotonic()
        with self._lock:
            last = self._last_event_at.get(shape_key)
            if last is not None and now - last < EVENT_INTERVAL_S:
                return False
            self._last_event_at[shape_key] = now
            if len(self._last_event_at) > 5000:  # bounded memory: forget the oldest shapes
                for key, _ in sorted(self._last_event_at.items(), key=lambda kv: kv[1])[:1000]:
                    del self._last_event_at[key]
            return True

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "since": dt.datetime.fromtimestamp(self.started_at, dt.timezone.utc).isoformat(),
                "slow_queries": self.slow_queries,
                "slow_query_max_ms": round(self.slow_query_max_ms, 1),
                "last_slow_query_at": self.last_slow_query_at,
                "recent_slow_queries": [
                    {"at": dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat(), "ms": ms, "shape": shape}
                    for at, ms, shape in self.recent_slow
                ],
                "failed_transactions": self.failed_transactions,
                "failed_by_class": dict(self.failed_by_class),
                "last_failure_at": self.last_failure_at,
                "pool_timeouts": self.pool_timeouts,
                "last_pool_timeout_at": self.last_pool_timeout_at,
                "last_pool_timeout_message": self.last_pool_timeout_message,
                "slow_query_events_recorded": self.events_recorded,
                "slow_query_event_errors": self.event_errors,
                "all_workers": _read_shared(),
            }


SHARED_COUNTERS = ("slow_queries", "failed_transactions", "pool_timeouts")


def _count_shared(name: str) -> None:
    token = _recording.set(True)  # the cache's own statements (if any) are not monitored
    try:
        caching.count(name)
    except Exception:
        slow_logger.debug("shared counter %s not updated", name, exc_info=True)
    finally:
        _recording.reset(token)


def _read_shared() -> dict | None:
    """Every worker's counts and last times from the shared cache; None without one."""
    try:
        found = caching.read_counters(SHARED_COUNTERS)
    except Exception:
        return None
    if found is None:
        return None
    return {
        **{name: n for name, (n, _at) in found.items()},
        **{f"last_{name}_at": at for name, (_n, at) in found.items()},
    }


counters = _Counters()


def snapshot() -> dict:
    return counters.snapshot()


def reset_counters() -> None:
    """Zero every counter and forget the per-shape event times (tests, or after an incident)."""
    counters.reset()
    caching.reset_counters(SHARED_COUNTERS)


# --- statement shapes and redaction --------------------------------------------------------

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w.\"`$])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_PLACEHOLDER = re.compile(r"%s|%\(\w+\)s|:\w+|\$\d+|\?")
_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_VALUES_ROWS = re.compile(r"(\(\?\))(?:\s*,\s*\(\?\))+")
_SPACE = re.compile(r"\s+")
_RECORDED_STATEMENTS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "MERGE", "REPLACE", "VALUES"})


def statement_shape(sql: str) -> str:
    """The statement with literals, numbers and placeholders as ``?`` and lists collapsed.

    ``SELECT * FROM t WHERE id IN (1, 2, 3) AND name = 'x'`` and the same statement with
    other values share one shape: ``SELECT * FROM t WHERE id IN (?) AND name = ?``.
    """
    text = _STRING.sub("?", sql or "")
    text = _PLACEHOLDER.sub("?", text)
    text = _NUMBER.sub("?", text)
    text = _LIST.sub("(?)", text)
    text = _VALUES_ROWS.sub(r"\1", text)
    return _SPACE.sub(" ", text).strip()[:_MAX_SQL_CHARS]


def shape_key(shape: str) -> str:
    return hashlib.sha1(shape.encode("utf-8", "replace")).hexdigest()[:16]


def _describe(value) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, decimal.Decimal)):
        return type(value).__name__
    if isinstance(value, str):
        return f"str({len(value)})"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"bytes({len(value)})"
    if isinstance(value, (dt.datetime, dt.date, dt.time, dt.timedelta, uuid.UUID)):
        return type(value).__name__
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}({len(value)})"
    return "?"


def redact_params(params, many: bool = False):
    """Parameter types and lengths, never values: ``["str(12)", "int", "None"]``."""
    if params is None:
        return []
    if many:
        try:
            rows = list(params)
        except TypeError:
            return "?"
        first = redact_params(rows[0]) if rows else []
        return {"rows": len(rows), "first": first}
    if isinstance(params, dict):
        return {str(k): _describe(v) for k, v in params.items()}
    try:
        return [_describe(v) for v in params]
    except TypeError:
        return "?"


# --- context: organization and request ---------------------------------------------------------


def _current_org_id():
    try:
        from agentforge_core.tenancy import current_org

        org = current_org()
    except Exception:
        return None
    return org if isinstance(org, uuid.UUID) else None


def _request_path() -> tuple[str, str]:
    try:
        from security.middleware import request_context

        ctx = request_context()
    except Exception:
        return "", ""
    return ctx.get("request_path") or "", ctx.get("request_method") or ""


# --- the wrapper ---------------------------------------------------------------------------------


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, IntegrityError):
        return "integrity"
    if isinstance(exc, OperationalError):
        return "operational"
    if isinstance(exc, ProgrammingError):
        return "programming"
    return "other"


def slow_query_threshold_ms() -> float:
    return float(getattr(settings, "DB_SLOW_QUERY_MS", 1000.0))


class QueryMonitor:
    """The execute wrapper; one shared instance, installed once per connection object."""

    marker = "agentforge_query_monitor"

    def __call__(self, execute, sql, params, many, context):
        if _recording.get():
            return execute(sql, params, many, context)
        start = time.perf_counter()
        failed = None
        try:
            return execute(sql, params, many, context)
        except DatabaseError as exc:
            failed = exc
            counters.add_failure(_error_kind(exc))
            raise
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1000
            threshold = slow_query_threshold_ms()
            if elapsed_ms >= threshold:
                try:
                    self.slow(context.get("connection"), sql, params, many, elapsed_ms, threshold, failed)
                except Exception:  # monitoring must never break the query it watches
                    slow_logger.debug("slow query bookkeeping failed", exc_info=True)

    def slow(self, conn, sql, params, many, elapsed_ms, threshold, failed) -> None:
        shape = statement_shape(sql if isinstance(sql, str) else str(sql))
        key = shape_key(shape)
        org_id = _current_org_id()
        path, method = _request_path()
        redacted = redact_params(params, many)
        counters.add_slow(elapsed_ms, shape)
        slow_logger.warning(
            "slow query: %.1f ms (threshold %.0f ms) vendor=%s alias=%s org=%s request=%s params=%s shape=%s%s",
            elapsed_ms,
            threshold,
            getattr(conn, "vendor", "?"),
            getattr(conn, "alias", "?"),
            org_id or "-",
            f"{method} {path}".strip() or "-",
            redacted,
            shape,
            f" failed={type(failed).__name__}" if failed is not None else "",
        )
        # Only the application's statements become events. Transaction control (BEGIN,
        # SAVEPOINT, COMMIT) runs while Django is between states, where an insert would nest
        # transactions; DDL and TRUNCATE are migrations and flushes. Those are logged and
        # counted only.
        recordable = shape.split(" ", 1)[0].lstrip("(").upper() in _RECORDED_STATEMENTS
        if conn is not None and recordable and counters.claim_event(key):
            self.record_event(conn, shape, key, elapsed_ms, threshold, org_id, path, method, redacted, failed)

    def record_event(
        self, conn, shape, key, elapsed_ms, threshold, org_id, path, method, redacted, failed=None
    ) -> None:
        """One SecurityEvent for this shape; its own queries are neither timed nor recorded."""
        if getattr(conn, "needs_rollback", False) or getattr(conn, "connection", None) is None:
            return  # a broken transaction cannot take another statement; the log line stands
        if failed is not None and conn.in_atomic_block:
            return  # the failed statement aborted the caller's transaction (PostgreSQL)
        from django.db import transaction

        from agentforge_core.tenancy import unscoped
        from security.models import SecurityEvent

        token = _recording.set(True)
        try:
            # A savepoint inside a caller's transaction: a failed insert never poisons it.
            with unscoped(), transaction.atomic(using=conn.alias):
                SecurityEvent.all_orgs.using(conn.alias).create(
                    org_id=org_id,
                    event_type=SecurityEvent.EventType.SLOW_QUERY,
                    severity=SecurityEvent.Severity.WARNING,
                    details={
                        "duration_ms": round(elapsed_ms, 1),
                        "threshold_ms": threshold,
                        "shape": shape,
                        "shape_key": key,
                        "params": redacted,
                        "vendor": conn.vendor,
                        "request_path": path,
                        "request_method": method,
                    },
                )
            with counters._lock:
                counters.events_recorded += 1
        except Exception as exc:  # table missing during migrate, read-only replica...
            with counters._lock:
                counters.event_errors += 1
            slow_logger.info("could not record a slow_query event: %s", exc)
        finally:
            _recording.reset(token)


monitor = QueryMonitor()


def install_on(conn) -> bool:
    """Add the monitor to one connection object (idempotent). True when newly added."""
    if any(getattr(w, "marker", None) == QueryMonitor.marker for w in conn.execute_wrappers):
        return False
    conn.execute_wrappers.append(monitor)
    return True


def _on_connection_created(sender, connection, **kwargs):
    install_on(connection)


# --- pool exhaustion ---------------------------------------------------------------------------


def pool_timeout_message(conn, waited_s: float) -> str:
    status = pool_status(conn)
    errors = status.get("connection_failures", 0)
    if errors and errors >= status.get("connection_attempts", 0):
        # Not a busy pool: it never opened a connection (a wrong name or password, a server
        # down). Raising the pool's size would not help; the connection errors say why.
        return (
            f"database unreachable: the pool opened no connection in {waited_s:.1f} s ({errors} attempts, all failed)"
        )
    pool = conn.settings_dict.get("OPTIONS", {}).get("pool") or {}
    size = pool.get("min_size", pool.get("min", "?")) if isinstance(pool, dict) else "?"
    maximum = pool.get("max_size", pool.get("max")) if isinstance(pool, dict) else None
    overflow = maximum - size if isinstance(maximum, int) and isinstance(size, int) else "?"
    return (
        f"database pool exhausted: waited {waited_s:.1f} s for a connection "
        f"(DB_POOL_SIZE={size}, DB_MAX_OVERFLOW={overflow}); raise DB_POOL_SIZE/DB_MAX_OVERFLOW "
        "or find what holds connections (long requests, leaked transactions)"
    )


def _is_pool_timeout(exc: BaseException) -> bool:
    seen = 0
    while exc is not None and seen < 5:
        if type(exc).__name__ == "PoolTimeout":
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _patch_get_new_connection(wrapper_class) -> None:
    """Log PoolTimeout clearly where the backend takes a pooled connection (PostgreSQL)."""
    original = wrapper_class.get_new_connection
    if getattr(original, "_agentforge_pool_watch", False):
        return

    def get_new_connection(self, conn_params):
        start = time.monotonic()
        try:
            return original(self, conn_params)
        except Exception as exc:
            if _is_pool_timeout(exc):
                message = pool_timeout_message(self, time.monotonic() - start)
                counters.add_pool_timeout(message)
                pool_logger.error(message)
            raise

    get_new_connection._agentforge_pool_watch = True
    get_new_connection.__wrapped__ = original
    wrapper_class.get_new_connection = get_new_connection


_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Watch every connection of this process; safe to call more than once."""
    global _installed
    from django.db import connections
    from django.db.backends.signals import connection_created

    with _install_lock:
        if not _installed:
            connection_created.connect(_on_connection_created, dispatch_uid="agentforge_query_monitor")
            for alias in connections:
                try:
                    engine = connections.settings[alias]["ENGINE"]
                    if engine == "django.db.backends.postgresql":
                        from django.db.backends.postgresql.base import DatabaseWrapper

                        _patch_get_new_connection(DatabaseWrapper)
                except Exception:  # a backend whose driver is missing is reported elsewhere
                    pass
            _installed = True
    # Connections this thread already opened (management commands that ran queries
    # before apps were ready) get the wrapper now; new ones through the signal.
    for conn in connections.all(initialized_only=True):
        install_on(conn)
