"""Dual mode's JSON side, written behind the database: several saves, one rewrite.

AgentForge rewrote a whole JSON file on every save; at 10,000 agents that is over a
second per save. In dual mode the database has committed before the file is touched, so
the file may trail it by a bounded delay: committed keys queue up per file, and one
rewrite per file (``LegacyFiles.apply``) brings all of them in line at most
``DUAL_WRITE_DELAY`` seconds after the first of them committed.

Durability rule: a save is durable once the database commits. The JSON copy follows
within the delay (plus one rewrite), and at interpreter exit the queue is flushed; a
process killed in between leaves its last saves missing from the files, which
``verify_parity`` reports and ``verify_parity --fix-from db`` repairs (as after any
failed JSON write). ``DUAL_WRITE_DELAY=0`` writes each save through, as before.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

# (data directory) -> queue; one background writer per directory and process.
_queues: dict[Path, "WriteBehindQueue"] = {}
_queues_lock = threading.Lock()


class WriteBehindQueue:
    def __init__(self, sync: Callable[[str, dict[str, str]], None], delay: float):
        self._sync = sync  # sync(collection, {key: operation}) rewrites one file
        self.delay = delay
        self._pending: dict[str, dict[str, str]] = {}
        self._first_at: float | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        # Held while a batch is being written: a flush (at exit above all) waits for the
        # background writer's batch instead of finding the queue empty and returning early.
        self._writing = threading.Lock()
        # Seconds between the first commit of a batch and the end of its rewrite, recent
        # batches: how far the JSON side trailed the database.
        self.lags: deque[float] = deque(maxlen=1000)

    def enqueue(self, collection: str, key: str, operation: str) -> None:
        if self.delay <= 0:
            self._sync(collection, {key: operation})
            return
        with self._cond:
            self._pending.setdefault(collection, {})[key] = operation
            if self._first_at is None:
                self._first_at = time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dual-json-writer", daemon=True)
                self._thread.start()
            self._cond.notify()

    def flush(self) -> None:
        """Write everything queued now, in the calling thread."""
        with self._writing:
            with self._cond:
                pending, first_at = self._pending, self._first_at
                self._pending, self._first_at = {}, None
            for collection, keys in pending.items():
                self._sync(collection, keys)
            if first_at is not None:
                self.lags.append(time.monotonic() - first_at)

    def _run(self) -> None:
        from django.db import connections

        while True:
            with self._cond:
                while self._first_at is None:
                    self._cond.wait()
                wait = self._first_at + self.delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                self.flush()
            finally:
                # This thread's own connections: an idle one would hold a pool slot (and,
                # in tests, keep the test database from being dropped).
                connections.close_all()


def queue_for(data_dir: Path, sync, delay: float) -> WriteBehindQueue:
    key = Path(data_dir).resolve()
    with _queues_lock:
        queue = _queues.get(key)
        if queue is None:
            queue = _queues[key] = WriteBehindQueue(sync, delay)
        queue.delay = delay
        return queue


def flush_all() -> None:
    """Write every queued JSON change of this process now (tests, shutdown, commands)."""
    with _queues_lock:
        queues = list(_queues.values())
    for queue in queues:
        queue.flush()


atexit.register(flush_all)
