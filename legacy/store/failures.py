"""Dual-write failures: counted per process, for /health/ and the logs."""

from __future__ import annotations

import collections
import datetime as dt
import threading

_lock = threading.Lock()
_count = 0
_recent: collections.deque = collections.deque(maxlen=100)


def record_failure(operation: str, collection: str, record_id, error: BaseException) -> None:
    global _count
    with _lock:
        _count += 1
        _recent.append(
            {
                "at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "operation": operation,
                "collection": collection,
                "id": str(record_id),
                "error": f"{type(error).__name__}: {error}",
            }
        )


_fallbacks: collections.Counter = collections.Counter()


def record_fallback_read(collection: str, count: int = 1) -> None:
    with _lock:
        _fallbacks[collection] += count


def fallback_reads() -> dict:
    """Records the dual store read from JSON because the database lacked them, per collection."""
    with _lock:
        return dict(_fallbacks)


def dual_write_failures() -> int:
    """How many JSON writes of the dual store failed since this process started.

    Each one left the JSON file behind the database; ``manage.py verify_parity
    --fix-from db`` repairs them.
    """
    return _count


def recent_dual_write_failures() -> list[dict]:
    """The last (at most 100) failures: when, which operation, collection and id, the error."""
    with _lock:
        return list(_recent)


def _reset_for_tests() -> None:
    global _count
    with _lock:
        _count = 0
        _recent.clear()
        _fallbacks.clear()
