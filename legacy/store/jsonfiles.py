"""The JSON side of the store: AgentForge's legacy files, read and written as the old app did.

Every write is a read-modify-write of the whole file, as in the JSON era, made safe for
several processes:

* an exclusive ``fcntl.flock`` on a sidecar lock file (``agents.json.lock`` next to
  ``agents.json``) is held from the read to the rename, so two writers never lose each
  other's records;
* the new content goes to a temporary file in the same directory, which is flushed and
  fsync'ed, then ``os.replace``'d over the old file, and the directory is fsync'ed, so a
  crash leaves either the old file or the new one, never a torn one. Readers therefore
  need no lock.

Formatting is the legacy one (docs/legacy-format.md §2): ``indent=2``; security files
``ensure_ascii=False``, app files ``ensure_ascii=True``; ``chunks_index.json`` on one
line; no trailing newline.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from legacy.format.collections import LEGACY_COLLECTIONS, file_label
from legacy.format.errors import LegacyDataError
from legacy.format.jsonio import discard_temporary, replace_atomically

# The record files of legacy.format.collections: objects keyed by record id, and lists whose
# records are found by their key (see ``record_key``). Single-object files are no stores.
DICT_COLLECTIONS = tuple(name for name, c in LEGACY_COLLECTIONS.items() if c.container == "dict")
LIST_COLLECTIONS = tuple(name for name, c in LEGACY_COLLECTIONS.items() if c.container == "list")
COLLECTIONS = tuple(name for name, c in LEGACY_COLLECTIONS.items() if c.container != "object")
OBJECT_COLLECTIONS = tuple(name for name, c in LEGACY_COLLECTIONS.items() if c.container == "object")
UNCHANGED = object()


class UnknownCollection(KeyError):
    def __init__(self, collection):
        super().__init__(collection)
        self.collection = collection

    def __str__(self):
        return (
            f"unknown collection {self.collection!r}; the store handles: {', '.join(COLLECTIONS)} "
            f"(single-object files {', '.join(OBJECT_COLLECTIONS)} are not record collections)"
        )


def check_collection(collection: str) -> str:
    if collection not in COLLECTIONS:
        raise UnknownCollection(collection)
    return collection


def chunk_key(record: dict) -> str:
    """The key of a ``chunks_index.json`` entry: ``<doc_id|page_id|source>#<chunk_id>``
    (the import mapper's record id).

    A chunk id is unique only within its document or page (docs/legacy-format.md §4.6).
    """
    return f"{record.get('doc_id') or record.get('page_id') or record.get('source')}#{record.get('chunk_id')}"


def record_key(collection: str, record: dict) -> str:
    """The id a record is stored under: its ``id`` (a composite key for chunks)."""
    if not isinstance(record, dict):
        raise TypeError(f"{collection}: a record is a dict, got {type(record).__name__}")
    if collection == "chunks_index":
        return chunk_key(record)
    rid = record.get("id")
    if rid is None or rid == "":
        raise ValueError(f"{collection}: the record has no id")
    return str(rid)


def dumps(collection: str, data) -> str:
    """The whole file's text in the legacy formatting."""
    legacy = LEGACY_COLLECTIONS[collection]
    return json.dumps(data, ensure_ascii=legacy.ensure_ascii, indent=None if legacy.one_line else 2)


class _Image:
    """A file as this process last wrote it: its container and each record's text.

    Re-serialising a whole file of 10,000 agents (``json.dumps`` with ``indent`` runs in
    pure Python) costs over a second; a file rewritten from cached record texts, where
    only the changed records are serialised again, costs a few milliseconds plus the
    write. ``signature`` (inode, mtime, size) tells whether another process has replaced
    the file since: every write is a rename, so the inode changes.
    """

    __slots__ = ("signature", "data", "texts")

    def __init__(self, data):
        self.signature = None
        self.data = data
        self.texts: dict[int, tuple[object, str]] = {}  # id(record) -> (record, its text)

    def render(self, collection: str) -> str:
        """The same text as ``dumps(collection, self.data)``, re-serialising only new records."""
        data = self.data
        legacy = LEGACY_COLLECTIONS[collection]
        ascii_only = legacy.ensure_ascii
        indent = None if legacy.one_line else 2
        old, texts = self.texts, {}

        def text(record):
            cached = old.get(id(record))
            if cached is None or cached[0] is not record:
                body = json.dumps(record, ensure_ascii=ascii_only, indent=indent)
                cached = (record, body.replace("\n", "\n  ") if indent else body)
            texts[id(record)] = cached
            return cached[1]

        if not data:
            rendered = "{}" if isinstance(data, dict) else "[]"
        elif indent is None:
            rendered = "[" + ", ".join(text(item) for item in data) + "]"
        elif isinstance(data, dict):
            items = ",\n".join(
                f"  {json.dumps(key, ensure_ascii=ascii_only)}: {text(value)}" for key, value in data.items()
            )
            rendered = "{\n" + items + "\n}"
        else:
            rendered = "[\n" + ",\n".join("  " + text(item) for item in data) + "\n]"
        self.texts = texts
        return rendered


# One image per file and process, shared by every store object on the same directory.
_images: dict[Path, _Image] = {}


def _signature(path: Path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: temp file in the same dir, fsync, rename, fsync dir."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    fh = os.fdopen(fd, "w", encoding="utf-8")
    try:
        os.fchmod(fd, mode)
        fh.write(text)
    except BaseException:
        discard_temporary(fh, tmp)
        raise
    replace_atomically(fh, tmp, path)


class LegacyFiles:
    """One legacy data directory: locked, atomic access to its record files."""

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)

    def path(self, collection: str) -> Path:
        return self.data_dir / file_label(check_collection(collection))

    @contextlib.contextmanager
    def locked(self, collection: str) -> Iterator[None]:
        """Hold the collection's cross-process write lock (``<file>.lock``, flock)."""
        path = self.path(collection)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def load(self, collection: str):
        """The file's container: a dict (id -> record) or a list; empty when the file is missing."""
        path = self.path(collection)
        is_list = LEGACY_COLLECTIONS[collection].container == "list"
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return [] if is_list else {}
        except json.JSONDecodeError as exc:
            raise LegacyDataError(
                file_label(collection), f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        if is_list and not isinstance(data, list):
            raise LegacyDataError(file_label(collection), "expected a list at the top level")
        if not is_list and not isinstance(data, dict):
            raise LegacyDataError(file_label(collection), "expected an object keyed by id at the top level")
        return data

    def records(self, collection: str) -> dict:
        """``{key: record}`` for any collection (list files indexed by ``record_key``)."""
        data = self.load(collection)
        if isinstance(data, dict):
            # The inner id is authoritative (docs/legacy-format.md §2); fall back to the outer key.
            return {str(rec.get("id", key)) if isinstance(rec, dict) else key: rec for key, rec in data.items()}
        return {record_key(collection, rec): rec for rec in data if isinstance(rec, dict)}

    def write(self, collection: str, data) -> None:
        """Replace the whole file (caller holds the lock when it read the data under it)."""
        path = self.path(collection)
        _images.pop(path, None)
        atomic_write_text(path, dumps(collection, data))

    def apply(self, collection: str, read_changes: Callable[[], dict]) -> bool:
        """Locked: put or remove several records in one rewrite of the file.

        ``read_changes()`` is called under the lock and returns ``{key: record or None}``
        (None removes the record). Returns whether the file changed. The file is parsed
        only when another process wrote it since this process last did, and only the
        changed records are serialised again (see :class:`_Image`).
        """
        path = self.path(collection)
        with self.locked(collection):
            image = _images.get(path)
            signature = _signature(path)
            if image is None or image.signature != signature or signature is None:
                image = _Image(self.load(collection))
            data, changed = image.data, False
            for key, record in read_changes().items():
                new = remove_record(collection, data, key) if record is None else put_record(collection, data, record)
                if new is not UNCHANGED:
                    data, changed = new, True
            image.data = data
            if changed:
                _images.pop(path, None)  # a failed write must not leave a cache ahead of the file
                atomic_write_text(path, image.render(collection))
                image.signature = _signature(path)
                _images[path] = image
            elif image.signature is None:
                image.signature = signature
                _images[path] = image
            return changed

    def update(self, collection: str, change: Callable[[object], object]) -> None:
        """Locked read-modify-write: ``change(container)`` returns the new container,
        or ``UNCHANGED`` to leave the file alone."""
        with self.locked(collection):
            data = self.load(collection)
            new = change(data)
            if new is not UNCHANGED:
                self.write(collection, new)

    # --- single-record edits, used by both JsonStore and the dual store -----------------

    def put(self, collection: str, record: dict) -> None:
        self.update(collection, lambda data: put_record(collection, data, record))

    def remove(self, collection: str, key: str) -> bool:
        removed = []

        def change(data):
            new = remove_record(collection, data, key)
            removed.append(new is not UNCHANGED)
            return new

        self.update(collection, change)
        return removed[0]


def put_record(collection: str, data, record: dict):
    """Insert or replace ``record`` in a loaded container (a dict keyed by id, or a list)."""
    key = record_key(collection, record)
    if isinstance(data, dict):
        for outer, inner in list(data.items()):
            # An outer key that differs from the inner id is still the same record.
            if outer != key and isinstance(inner, dict) and str(inner.get("id")) == key:
                del data[outer]
        data[key] = record
        return data
    for index, item in enumerate(data):
        if isinstance(item, dict) and record_key(collection, item) == key:
            data[index] = record
            return data
    data.append(record)  # the old audit logger appended: the list stays oldest first
    return data


def remove_record(collection: str, data, key: str):
    """``data`` without the record ``key``, or UNCHANGED when it is not there."""
    if isinstance(data, dict):
        found = False
        for outer, inner in list(data.items()):
            inner_id = str(inner.get("id", outer)) if isinstance(inner, dict) else outer
            if inner_id == key:
                del data[outer]
                found = True
        return data if found else UNCHANGED
    kept = [i for i in data if not (isinstance(i, dict) and record_key(collection, i) == key)]
    return kept if len(kept) != len(data) else UNCHANGED
