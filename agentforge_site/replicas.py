"""Read replicas: reads to a healthy replica, writes and migrations to the primary.

Read-your-writes: a write pins the reads of the code that made it to the primary for
``DB_REPLICA_STICKY_SECONDS``. The pin lives in a ContextVar, so it covers the rest of the
request, the ``org_scope`` block (and the thread or asyncio task) that wrote, sync and
async (Django's async ORM hands context changes back to the awaiting task); the next
requests of the same browser follow a short-lived signed cookie set by
:class:`ReadYourWritesMiddleware`, and other clients carry the same signed marker
themselves (:func:`write_marker` / :func:`follow_marker`).

Reads also stay on the primary inside ``transaction.atomic()`` and :func:`primary_only`
(import, export, backup, parity checks). A replica that is unreachable, not in recovery,
or more than ``DB_REPLICA_MAX_LAG`` seconds behind is skipped; its state is measured on
PostgreSQL at most every ``DB_REPLICA_CHECK_INTERVAL`` seconds per process. See
docs/operations.md ("Read replicas") for what this guarantees and what it does not.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
import threading
import time
from contextlib import ContextDecorator
from dataclasses import asdict, dataclass

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core import signing
from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger("agentforge.replicas")

PRIMARY = DEFAULT_DB_ALIAS
COOKIE_NAME = "agentforge_rw"
_SIGNER_SALT = "agentforge.replicas.read-your-writes"
CHECK_TIMEOUT_S = 2


def replica_aliases() -> list[str]:
    return list(getattr(settings, "DATABASE_REPLICAS", []))


# --- read-your-writes ----------------------------------------------------------------------


class _ReadState:
    """Per request / context: until when reads stay on the primary, and the replica in use.

    Mutable on purpose: contexts copied from the one that made it (threads, tasks spawned
    in a request) share it, so a write anywhere in the request pins the whole request.
    """

    __slots__ = ("primary_until", "written_at", "replica")

    def __init__(self):
        self.primary_until = 0.0
        self.written_at = None
        self.replica = None


_state: contextvars.ContextVar = contextvars.ContextVar("agentforge_read_state", default=None)
_forced: contextvars.ContextVar = contextvars.ContextVar("agentforge_primary_only", default=False)


def _current() -> _ReadState:
    state = _state.get()
    if state is None:
        state = _ReadState()
        _state.set(state)
    return state


def new_read_state():
    """Give the current context a fresh state; returns the token for :func:`end_read_state`."""
    return _state.set(_ReadState())


def end_read_state(token) -> None:
    _state.reset(token)


def mark_written() -> None:
    """Pin this context's reads to the primary (the router calls it for every write)."""
    state = _current()
    now = time.time()
    state.written_at = now
    state.primary_until = max(state.primary_until, now + settings.DB_REPLICA_STICKY_SECONDS)


def reads_pinned() -> bool:
    state = _state.get()
    return state is not None and state.primary_until > time.time()


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=_SIGNER_SALT)


def write_marker() -> str | None:
    """A signed marker of this context's last write, for a client to hand back later; None when it wrote nothing."""
    state = _state.get()
    if state is None or state.written_at is None:
        return None
    return _signer().sign(repr(state.written_at))


def follow_marker(marker: str | None) -> bool:
    """Pin this context until the marker's write is DB_REPLICA_STICKY_SECONDS old.

    A forged, malformed or expired marker is ignored (False): it can never pin a client
    for longer than a real write would.
    """
    if not marker:
        return False
    sticky = settings.DB_REPLICA_STICKY_SECONDS
    try:
        written_at = float(_signer().unsign(marker, max_age=sticky))
    except (signing.BadSignature, ValueError):
        return False
    until = min(written_at, time.time()) + sticky
    state = _current()
    state.primary_until = max(state.primary_until, until)
    return until > time.time()


class primary_only(ContextDecorator):
    """Every read in the block (or decorated function) goes to the primary.

    For system work that must see the latest committed state: import, export, backup,
    parity checks. Nestable; a no-op without replicas.
    """

    def __enter__(self):
        self._token = _forced.set(True)
        return self

    def __exit__(self, *exc):
        _forced.reset(self._token)
        return False

    def _recreate_cm(self):
        return primary_only()


# --- replica health --------------------------------------------------------------------------


def direct_connect_params(conn, timeout: int) -> dict:
    """psycopg.connect() arguments for a Django PostgreSQL alias, with a connect timeout."""
    params = {
        k: v
        for k, v in conn.get_connection_params().items()
        if k not in ("context", "cursor_factory", "prepare_threshold")
    }
    params["connect_timeout"] = timeout
    return params


def _lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass
class ReplicaStatus:
    alias: str
    reachable: bool = False
    lag_s: float | None = None
    in_use: bool = False
    reason: str = ""  # why it is skipped, without hosts or names; empty when in use
    error: str = ""  # the driver's message when unreachable
    replay_paused: bool | None = None
    checked_at: float = 0.0

    def as_dict(self) -> dict:
        data = asdict(self)
        data["checked_at"] = (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.checked_at)) if self.checked_at else None
        )
        return data


class ReplicaMonitor:
    """Measures each replica's lag on PostgreSQL and caches it for DB_REPLICA_CHECK_INTERVAL.

    Checks use their own short-timeout connections (one per server, kept open), so a dead
    replica costs CHECK_TIMEOUT_S once per interval, not a pool timeout per query. While one
    thread checks, the others use the previous result.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._statuses: dict[str, ReplicaStatus] = {}
        self._expires = 0.0
        self._conns: dict[str, object] = {}
        self._pid = os.getpid()
        self._inherited: list = []

    def statuses(self, refresh: bool = False) -> list[ReplicaStatus]:
        if refresh or time.monotonic() >= self._expires:
            # The first check blocks; later ones are skipped while another thread runs one.
            if self._lock.acquire(blocking=refresh or not self._statuses):
                try:
                    if refresh or time.monotonic() >= self._expires:
                        self._statuses = {alias: self._check(alias) for alias in replica_aliases()}
                        self._expires = time.monotonic() + settings.DB_REPLICA_CHECK_INTERVAL
                finally:
                    self._lock.release()
        return [self._statuses[alias] for alias in replica_aliases() if alias in self._statuses]

    def healthy(self) -> list[str]:
        return [s.alias for s in self.statuses() if s.in_use]

    def reset(self) -> None:
        """Forget every measurement and close the check connections."""
        with self._lock:
            for conn in self._conns.values():
                try:
                    conn.close()
                except Exception:
                    pass
            self._conns.clear()
            self._statuses.clear()
            self._expires = 0.0

    def _query(self, alias: str, sql: str):
        import psycopg

        if self._pid != os.getpid():
            # A forked worker (a preloading server) must not talk on its parent's sockets, nor
            # let them be freed (which would end the parent's sessions): keep them, unused.
            self._inherited.extend(self._conns.values())
            self._conns, self._pid = {}, os.getpid()
        conn = self._conns.get(alias)
        if conn is None or conn.closed:
            params = direct_connect_params(connections[alias], CHECK_TIMEOUT_S)
            params["options"] = f"{params.get('options', '')} -c statement_timeout={CHECK_TIMEOUT_S * 1000}".strip()
            conn = psycopg.connect(autocommit=True, **params)
            self._conns[alias] = conn
        try:
            return conn.execute(sql).fetchone()
        except Exception:
            conn.close()
            self._conns.pop(alias, None)
            raise

    def _check(self, alias: str) -> ReplicaStatus:
        status = ReplicaStatus(alias=alias, checked_at=time.time())
        max_lag = settings.DB_REPLICA_MAX_LAG
        # The primary's position first: a replica that has replayed up to it has everything
        # committed before the check began.
        try:
            primary_lsn = _lsn(self._query(PRIMARY, "SELECT pg_current_wal_lsn()::text")[0])
        except Exception:
            primary_lsn = None  # primary down: judge the replica by its replay time alone
        try:
            in_recovery, replay_lsn, age, paused = self._query(
                alias,
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                "EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8, "
                "CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END",
            )
        except Exception as exc:
            status.reason = "unreachable"
            status.error = " ".join(str(exc).split())[:300] or type(exc).__name__
            # Its pooled connections are dead and the pool would retry with a growing backoff:
            # drop it, so a fresh pool connects as soon as the replica is back.
            try:
                connections[alias].close_pool()
            except Exception:
                pass
            return status
        status.reachable = True
        status.replay_paused = paused
        if not in_recovery:
            status.reason = "not in recovery: a primary, not a replica"
            return status
        if primary_lsn is not None and replay_lsn is not None and _lsn(replay_lsn) >= primary_lsn:
            status.lag_s = 0.0
        elif age is not None:
            status.lag_s = round(max(age, 0.0), 3)
        if status.lag_s is None:
            status.reason = "behind the primary and no transaction replayed yet"
        elif status.lag_s > max_lag:
            status.reason = f"lag {status.lag_s:g} s over DB_REPLICA_MAX_LAG={max_lag:g}"
        else:
            status.in_use = True
        if status.reason:
            logger.warning("replica %s skipped: %s %s", alias, status.reason, status.error)
        return status


monitor = ReplicaMonitor()


# --- the router --------------------------------------------------------------------------------


# The rows that decide who is signed in, and as whom: read from the primary, whoever wrote them.
# Read-your-writes pins only the client that wrote; a replica seconds behind would let
# everyone else through with an API key just revoked, a session just signed out or ended, the
# password just changed, or an account just disabled or locked (and its MFA state). Security
# events hold the last failed sign-in, which decides whether the lockout's count starts again.
CREDENTIAL_MODELS = frozenset(
    {
        "accounts.User",
        "accounts.UserSession",
        "accounts.HashedSession",
        "accounts.MFASettings",
        "security.APIKey",
        "security.SecurityEvent",
    }
)


class ReplicaRouter:
    """Installed by settings when DB_REPLICA_HOSTS or DATABASE_REPLICA_URLS is set."""

    def db_for_read(self, model, **hints):
        if _forced.get() or connections[PRIMARY].in_atomic_block or reads_pinned():
            return PRIMARY
        if model._meta.label in CREDENTIAL_MODELS:
            return PRIMARY
        healthy = monitor.healthy()
        if not healthy:
            return PRIMARY
        # One replica per request or context while it stays healthy: reads do not go back in time.
        state = _current()
        if state.replica not in healthy:
            state.replica = random.choice(healthy)
        return state.replica

    def db_for_write(self, model, **hints):
        mark_written()
        return PRIMARY

    def allow_relation(self, obj1, obj2, **hints):
        pool = {PRIMARY, *replica_aliases()}
        if obj1._state.db in pool and obj2._state.db in pool:
            return True
        return None

    def allow_migrate(self, db, app_label, **hints):
        return db == PRIMARY


class ReadYourWritesMiddleware:
    """One read state per request; a request that wrote sets a signed cookie that keeps the
    browser's next requests on the primary until DB_REPLICA_STICKY_SECONDS after the write."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        token = self._begin(request)
        try:
            response = self.get_response(request)
            self._finish(request, response)
            return response
        finally:
            end_read_state(token)

    async def __acall__(self, request):
        token = self._begin(request)
        try:
            response = await self.get_response(request)
            self._finish(request, response)
            return response
        finally:
            end_read_state(token)

    @staticmethod
    def _begin(request):
        token = new_read_state()
        follow_marker(request.COOKIES.get(COOKIE_NAME))
        return token

    @staticmethod
    def _finish(request, response):
        marker = write_marker()
        if marker:
            sticky = settings.DB_REPLICA_STICKY_SECONDS
            response.set_cookie(
                COOKIE_NAME, marker, max_age=int(sticky) + 1, httponly=True, samesite="Lax", secure=request.is_secure()
            )
