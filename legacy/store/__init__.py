"""One storage API for the parallel run: JSON files, the database, or both.

AgentForge's JSON-era code works with dicts in the legacy format. ``get_store()`` gives it
a store with ``save(collection, record)``, ``get(collection, id)``,
``delete(collection, id)`` and ``all(collection)`` whose backing is chosen by
``settings.STORAGE_MODE``:

``json``
    the legacy files only (:class:`JsonStore`), as the old application did;
``dual``
    both (:class:`DualStore`): the database first, in a transaction, then the JSON file
    after the commit; reads from the database, falling back to JSON;
``database``
    the database only (:class:`DatabaseStore`), through the import mappers.

See ``docs/parallel-run.md`` for the order, failure behaviour and scoping rules.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from legacy.store.failures import dual_write_failures, fallback_reads, recent_dual_write_failures
from legacy.store.json_store import JsonStore
from legacy.store.jsonfiles import COLLECTIONS, DICT_COLLECTIONS, LIST_COLLECTIONS, UnknownCollection

MODES = ("json", "dual", "database")

__all__ = [
    "COLLECTIONS",
    "DICT_COLLECTIONS",
    "LIST_COLLECTIONS",
    "MODES",
    "DatabaseStore",
    "DualStore",
    "JsonStore",
    "UnknownCollection",
    "dual_write_failures",
    "fallback_reads",
    "get_store",
    "legacy_data_dir",
    "recent_dual_write_failures",
]


def legacy_data_dir() -> Path:
    """``settings.LEGACY_DATA_DIR``, else ``data/`` under the project (like ``import_json``)."""
    configured = getattr(settings, "LEGACY_DATA_DIR", "") or ""
    if configured:
        return Path(configured)
    return Path(settings.BASE_DIR) / "data"


def get_store(mode: str | None = None, data_dir=None):
    """The store for ``mode`` (default ``settings.STORAGE_MODE``)."""
    mode = (mode or getattr(settings, "STORAGE_MODE", "database")).lower()
    if mode not in MODES:
        raise ImproperlyConfigured(f"STORAGE_MODE: unknown value {mode!r} (expected json, dual or database)")
    if mode == "database":
        from legacy.store.db_store import DatabaseStore

        return DatabaseStore()
    directory = Path(data_dir) if data_dir is not None else legacy_data_dir()
    if mode == "json":
        return JsonStore(directory)
    from legacy.store.dual_store import DualStore

    return DualStore(directory)


def __getattr__(name):
    # The database-backed stores import Django models: load them lazily so that
    # ``legacy.store`` (and dual_write_failures for /health/) imports before app loading.
    if name == "DatabaseStore":
        from legacy.store.db_store import DatabaseStore

        return DatabaseStore
    if name == "DualStore":
        from legacy.store.dual_store import DualStore

        return DualStore
    raise AttributeError(name)
