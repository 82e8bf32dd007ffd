"""Result caching with versioned keys, and a Redis cache that never breaks a request.

Cached reads go through :func:`cached`. Every key carries the organization it belongs to
and that organization's *generation*, a counter in the cache bumped after each committed
write to a table the reads depend on (:func:`bump`). A bump makes every older key of that
organization unreachable, so no invalidation path has to know which keys exist; the
importer and key rotation bump the global generation, which every key carries too.

Writes inside a transaction bump when it commits: before that, another process could read
the old rows and cache them under the new generation. Until then the writing transaction
bypasses the cache entirely, so it neither reads its pre-write entries nor stores rows a
rollback may take back.

:class:`ResilientRedisCache` is Django's Redis backend whose failures are logged once and
answered as a miss: Redis down means slower, never an error page. ``/health/`` shows it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from django.core.cache import cache
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.dispatch import Signal

from agentforge_site.replicas import primary_only

logger = logging.getLogger("agentforge.cache")

# Sent by the scoped querysets after writes that send no per-row signals (update(),
# bulk_create(), bulk_update()): sender is the model, org_ids the organizations touched
# (None when they are unknown: every organization is bumped).
rows_changed = Signal()

GLOBAL = "all"
SYSTEM = "system"  # the "organization" of global tables (system settings, permission catalog)
_MISSING = object()


# --- Redis that degrades to "no cache" ------------------------------------------------------


class _Status:
    """Whether the cache answered lately; one per process, read by /health/."""

    # After a failure the cache is skipped this long: a black-holed Redis must not add a
    # connect timeout to every read.
    RETRY_AFTER_S = 5.0

    def __init__(self):
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.last_error = ""
        self.failures = 0
        self._retry_at = 0.0

    def skip(self) -> bool:
        return self.down_since is not None and time.monotonic() < self._retry_at

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self._retry_at = time.monotonic() + self.RETRY_AFTER_S
            first = self.down_since is None
            if first:
                self.down_since = time.time()
        if first:  # once per outage, not once per request
            logger.warning("cache unavailable, running uncached: %s", self.last_error)

    def succeeded(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            was_down = self.down_since
            self.down_since = None
        if was_down is not None:
            logger.warning("cache available again after %.0f s", time.time() - was_down)


status = _Status()


def _guarded(name, fallback):
    original = getattr(RedisCache, name)

    def method(self, *args, **kwargs):
        if status.skip():
            return fallback(*args, **kwargs)
        try:
            result = original(self, *args, **kwargs)
        except ValueError:  # incr() of a missing key: Django's contract, not an outage
            raise
        except Exception as exc:  # redis.ConnectionError, TimeoutError, ResponseError (OOM)...
            status.failed(exc)
            return fallback(*args, **kwargs)
        status.succeeded()
        return result

    method.__name__ = name
    return method


def _default_arg(key, default=None, *args, **kwargs):
    return kwargs.get("default", default)


class ResilientRedisCache(RedisCache):
    """``django.core.cache.backends.redis.RedisCache``; an unreachable Redis reads as empty."""

    get = _guarded("get", _default_arg)
    get_many = _guarded("get_many", lambda *a, **k: {})
    has_key = _guarded("has_key", lambda *a, **k: False)
    add = _guarded("add", lambda *a, **k: False)
    set = _guarded("set", lambda *a, **k: False)
    set_many = _guarded("set_many", lambda data, *a, **k: list(data))
    touch = _guarded("touch", lambda *a, **k: False)
    delete = _guarded("delete", lambda *a, **k: False)
    delete_many = _guarded("delete_many", lambda *a, **k: None)
    clear = _guarded("clear", lambda *a, **k: False)

    # A counter while Redis is down reads as just started (``delta``): a caller such as a
    # throttle keeps working, open, instead of failing the request.
    incr = _guarded("incr", lambda key, delta=1, *a, **k: delta)


def cache_report() -> dict:
    """The cache's state for /health/: backend, reachable, since when not, last error.

    Probes the cache once (a read), so a recovered Redis shows as available at once.
    """
    backend = type(cache).__name__
    probe_error = ""
    try:
        cache.get("health-probe")
    except Exception as exc:  # a database cache whose table is missing
        probe_error = f"{type(exc).__name__}: {exc}"[:300]
    available = status.down_since is None and not probe_error
    report = {"backend": backend, "available": available}
    if not available:
        report["down_since"] = status.down_since
        report["last_error"] = probe_error or status.last_error
    return report


# --- state shared by the worker processes ------------------------------------------------------


def _shared_cache():
    """The cache, when it can hold state shared by the workers; else None.

    Not the dummy cache (it keeps nothing) nor the database cache (this state is written
    from the query monitor, beside a statement that may just have failed), nor a cache
    that is down: the callers keep their own process's state then.
    """
    from django.core.cache.backends.db import DatabaseCache
    from django.core.cache.backends.dummy import DummyCache

    if isinstance(cache, (DummyCache, DatabaseCache)) or status.skip():
        return None
    return cache


def claim(name: str, seconds: float) -> bool | None:
    """Take ``name`` for ``seconds`` across every process sharing the cache: True for the
    one caller that got it, False for the others, None when the cache cannot say."""
    shared = _shared_cache()
    if shared is None:
        return None
    taken = shared.add(f"claim:{name}", 1, seconds)
    return None if status.down_since is not None else taken


def count(name: str) -> None:
    """Add one to the shared counter ``name`` and stamp the time it last moved."""
    shared = _shared_cache()
    if shared is None:
        return
    key = f"counter:{name}"
    try:
        shared.incr(key)
    except ValueError:
        if not shared.add(key, 1, None):  # another process created it meanwhile
            try:
                shared.incr(key)
            except ValueError:
                return
    shared.set(f"{key}:at", time.time(), None)


def read_counters(names) -> dict | None:
    """``{name: (count, last time)}`` of the shared counters; None without a shared cache."""
    shared = _shared_cache()
    if shared is None:
        return None
    keys = [f"counter:{name}{suffix}" for name in names for suffix in ("", ":at")]
    found = shared.get_many(keys)
    if status.down_since is not None:
        return None
    return {name: (found.get(f"counter:{name}", 0), found.get(f"counter:{name}:at")) for name in names}


def reset_counters(names) -> None:
    shared = _shared_cache()
    if shared is not None:
        shared.delete_many([f"counter:{name}{suffix}" for name in names for suffix in ("", ":at")])


# --- generations and cached reads ------------------------------------------------------------


def _org_key(org_id) -> str:
    if org_id is None:
        return SYSTEM
    return str(org_id if isinstance(org_id, uuid.UUID) else uuid.UUID(str(org_id)))


def _generation_key(org_key: str) -> str:
    return f"gen:{org_key}"


def _generations(org_key: str) -> str | None:
    """``"<global>.<organization>"``, or None when the cache cannot keep a counter."""
    _redo_lost_bumps()
    keys = [_generation_key(GLOBAL), _generation_key(org_key)]
    found = cache.get_many(keys)
    for key in keys:
        if key not in found:
            # Never 0 after an eviction or a restart: entries written under the counter's old
            # values must not come back, so a new counter starts at the clock.
            cache.add(key, time.time_ns(), None)
    if len(found) < len(keys):
        found = cache.get_many(keys)
        if len(found) < len(keys):
            return None
    return f"{found[keys[0]]}.{found[keys[1]]}"


class _BumpOnCommit:
    """The on_commit callback of one transaction: the organizations it wrote."""

    def __init__(self):
        self.org_keys: set[str] = set()

    def __call__(self):
        for org_key in self.org_keys:
            _incr(org_key)


def _pending_bump(conn):
    for _sids, func, _robust in conn.run_on_commit:
        if isinstance(func, _BumpOnCommit):
            return func
    return None


def _incr(org_key: str) -> None:
    _redo_lost_bumps()
    key = _generation_key(org_key)
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, time.time_ns(), None)
    if status.down_since is not None:
        # The bump never reached the cache (down, or a timeout): the entries it should have
        # retired answer every process as soon as the cache is back, a revoked permission
        # included, until CACHE_TIMEOUT. This process bumps everything once it can.
        _lost_bumps.set()


# Set when a bump failed; cleared by the first bump of everything that reaches the cache.
_lost_bumps = threading.Event()


def _redo_lost_bumps() -> None:
    if not _lost_bumps.is_set() or status.skip():
        return
    _lost_bumps.clear()
    _incr(GLOBAL)  # sets the flag again if this bump is lost too


def bump(org_id=None, *, everything: bool = False, using: str = DEFAULT_DB_ALIAS) -> None:
    """Invalidate the organization's cached reads (``org_id`` None: the global tables';
    ``everything``: all organizations'), when the current transaction commits."""
    org_key = GLOBAL if everything else _org_key(org_id)
    conn = connections[using]
    if not conn.in_atomic_block:
        _incr(org_key)
        return
    pending = _pending_bump(conn)
    if pending is None:
        pending = _BumpOnCommit()
        transaction.on_commit(pending, using=using, robust=True)
    pending.org_keys.add(org_key)


def _writing(using: str = DEFAULT_DB_ALIAS) -> bool:
    """True inside a transaction that changed cached tables and has not committed yet."""
    conn = connections[using]
    return conn.in_atomic_block and _pending_bump(conn) is not None


def cached(name: str, org_id, compute, *parts, timeout=DEFAULT_TIMEOUT):
    """``compute()``, cached under ``name``, the organization (None: global tables) and
    ``parts``; recomputed once the organization or everything is bumped.

    Cache only plain values, never decrypted secrets. Entries expire after CACHE_TIMEOUT
    even if no bump reached them (a write while the cache was down, or from a process
    without these hooks).
    """
    if _writing():
        return compute()
    org_key = _org_key(org_id)
    generation = _generations(org_key)
    if generation is None:
        return compute()
    key = ":".join([name, org_key, generation, *map(str, parts)])
    value = cache.get(key, _MISSING)
    if value is _MISSING:
        # From the primary: a replica behind the write that bumped the generation would have
        # its old rows (a revoked permission) stored under the new one, for CACHE_TIMEOUT.
        with primary_only():
            value = compute()
        cache.set(key, value, timeout)
    return value


# --- invalidation hooks ------------------------------------------------------------------------


def _org_id_of(instance):
    from accounts.models import Organization

    if isinstance(instance, Organization):
        return instance.pk
    return getattr(instance, "org_id", None)


def _bump_for(model, org_ids, using) -> None:
    if model._meta.label in EVERY_ORGANIZATION:
        bump(everything=True, using=using)
        return
    for org_id in org_ids:
        bump(org_id, using=using)


def _on_row_written(sender, instance, using=DEFAULT_DB_ALIAS, **kwargs):
    _bump_for(sender, [_org_id_of(instance)], using)


def _on_m2m_changed(sender, instance, action, using=DEFAULT_DB_ALIAS, **kwargs):
    if action.startswith("post_"):
        _bump_for(type(instance), [_org_id_of(instance)], using)


def _on_rows_changed(sender, org_ids=None, using=DEFAULT_DB_ALIAS, **kwargs):
    if org_ids is None and sender._meta.label not in GLOBAL_TABLES:
        bump(everything=True, using=using)
        return
    _bump_for(sender, org_ids or [None], using)


# The tables the cached reads depend on (settings, permissions and their inheritance,
# agents with their tools, API keys). A write to any of them bumps its organization.
CACHED_MODELS = (
    "accounts.Organization",
    "accounts.Permission",
    "accounts.Role",
    "accounts.RolePermission",
    "accounts.UserRole",
    "accounts.GroupMembership",
    "accounts.GroupRole",
    "accounts.Group",
    "agents.Agent",
    "agents.AgentTool",
    "agents.Tool",
    "settings_app.OrgSetting",
    "settings_app.SystemSetting",
)
# Tables without an organization: their rows are cached under the "system" generation...
GLOBAL_TABLES = ("accounts.Permission", "settings_app.SystemSetting")
# ...except the permission catalog, whose codenames every organization's roles resolve to.
EVERY_ORGANIZATION = ("accounts.Permission",)


def install() -> None:
    """Connect the invalidation hooks (``OperationsConfig.ready``); idempotent."""
    from django.apps import apps
    from django.db.models.signals import m2m_changed, post_delete, post_save

    for label in CACHED_MODELS:
        model = apps.get_model(label)
        uid = f"agentforge_cache_{label}"
        post_save.connect(_on_row_written, sender=model, dispatch_uid=uid + "_save")
        post_delete.connect(_on_row_written, sender=model, dispatch_uid=uid + "_delete")
        rows_changed.connect(_on_rows_changed, sender=model, dispatch_uid=uid + "_rows")
        for field in model._meta.local_many_to_many:
            m2m_changed.connect(_on_m2m_changed, sender=field.remote_field.through, dispatch_uid=f"{uid}_{field.name}")
