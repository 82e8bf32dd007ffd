"""Reading and writing the legacy JSON files exactly as AgentForge did.

Small files are read with ``json.load`` (exact line/column on errors); the large ones
(audit logs, conversations, documents, scraped pages, chunk index) are streamed with
ijson, so memory stays constant whatever the file size. Writing reproduces the legacy
formatting: indent 2, ``ensure_ascii=False`` for security files and ``True`` for app
files, ``chunks_index.json`` on one line, no trailing newline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import IO, Iterator

import ijson

from agentforge_site.files import open_private, private_dir
from legacy.errors import LegacyDataError

UTC = dt.timezone.utc
# Files that may be huge and are therefore streamed.
STREAMED = {"security/audit_logs", "conversations", "documents", "scraped_pages", "chunks_index"}
# Above this size a malformed streamed file gets an approximate position only.
EXACT_ERROR_LIMIT = 64 * 1024 * 1024
READ_CHUNK = 64 * 1024


def file_label(collection: str) -> str:
    return f"{collection}.json"


def confined(root: Path, path: Path, label: str) -> Path:
    """``path`` when its real location is inside the data directory ``root``; a symbolic
    link out of it (``lab/x.json`` -> any JSON file of the machine) is refused."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise LegacyDataError(label, f"links outside the data directory (to {real}); refused")
    return path


# --- timestamps -----------------------------------------------------------------------

def parse_timestamp(value) -> dt.datetime:
    """A naive legacy timestamp is UTC; an explicit offset is honoured."""
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def format_timestamp(value: dt.datetime | None) -> str | None:
    """``datetime.utcnow().isoformat()`` style: naive UTC, fraction only when non-zero."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat()


# --- reading ----------------------------------------------------------------------------

class _CountingReader:
    """A binary reader that remembers how many bytes it has handed out."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(READ_CHUNK if size is None or size < 0 else min(size, READ_CHUNK))
        self.consumed += len(data)
        return data


def _first_char(path: Path) -> str:
    with open(path, "rb") as fh:
        while True:
            block = fh.read(4096)
            if not block:
                return ""
            stripped = block.lstrip()
            if stripped:
                if stripped.startswith(b"\xef\xbb\xbf"):
                    stripped = stripped[3:].lstrip()
                    if not stripped:
                        continue
                return chr(stripped[0])


def _position_error(path: Path, label: str, offset: int | None, detail: str) -> LegacyDataError:
    """Name line and column: exactly for files we can afford to parse, else approximately."""
    size = path.stat().st_size
    if size <= EXACT_ERROR_LIMIT:
        try:
            with open(path, encoding="utf-8") as fh:
                json.load(fh)
        except json.JSONDecodeError as exc:
            return LegacyDataError(label, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
        except UnicodeDecodeError as exc:
            return LegacyDataError(label, f"not UTF-8 text (byte {exc.start}): {exc.reason}")
    if offset is None:
        return LegacyDataError(label, f"malformed JSON: {detail}")
    line, column = 1, 1
    with open(path, "rb") as fh:
        remaining = offset
        while remaining > 0:
            block = fh.read(min(READ_CHUNK, remaining))
            if not block:
                break
            remaining -= len(block)
            newlines = block.count(b"\n")
            if newlines:
                line += newlines
                column = len(block) - block.rfind(b"\n")
            else:
                column += len(block)
    first_line = detail.strip().splitlines()[0] if detail.strip() else "parse error"
    return LegacyDataError(label, f"malformed JSON near line {line}, column {column} (within 64 KiB): {first_line}")


def load_json(path: Path, label: str):
    """Load a whole (small) file; errors name the file, line and column."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise LegacyDataError(label, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise LegacyDataError(label, f"not UTF-8 text (byte {exc.start}): {exc.reason}") from None
    except OSError as exc:
        raise LegacyDataError(label, f"cannot read: {exc.strerror}") from None


def iter_container(path: Path, label: str, container: str) -> Iterator[tuple[str | None, object]]:
    """Yield ``(outer_key, record)`` of a dict file or ``(None, item)`` of a list file, streaming."""
    first = _first_char(path)
    if first == "":
        raise LegacyDataError(label, "file is empty (expected " + ("an object" if container == "dict" else "a list") + ")")
    expected = "{" if container == "dict" else "["
    if first != expected:
        if first in "{[":
            kind = "an object" if first == "{" else "a list"
            want = "an object keyed by id" if container == "dict" else "a list"
            raise LegacyDataError(label, f"expected {want} at the top level, got {kind}")
        raise _position_error(path, label, 0, "not JSON")
    with open(path, "rb") as raw:
        reader = _CountingReader(raw)
        try:
            if container == "dict":
                yield from ijson.kvitems(reader, "", use_float=True)
            else:
                for item in ijson.items(reader, "item", use_float=True):
                    yield None, item
        except ijson.JSONError as exc:
            raise _position_error(path, label, reader.consumed, str(exc)) from None
        except UnicodeDecodeError as exc:
            raise LegacyDataError(label, f"not UTF-8 text: {exc.reason}") from None


def read_records(path: Path, label: str, container: str, stream: bool) -> Iterator[tuple[str | None, object]]:
    if stream:
        yield from iter_container(path, label, container)
        return
    data = load_json(path, label)
    if container == "dict":
        if not isinstance(data, dict):
            raise LegacyDataError(label, f"expected an object keyed by id at the top level, got {_kind(data)}")
        yield from data.items()
    else:
        if not isinstance(data, list):
            raise LegacyDataError(label, f"expected a list at the top level, got {_kind(data)}")
        for item in data:
            yield None, item


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


# --- writing ----------------------------------------------------------------------------

def is_security(collection: str) -> bool:
    return collection.startswith("security/")


class JSONWriter:
    """Write one legacy file incrementally, formatted like ``json.dump(obj, indent=2)``."""

    def __init__(self, path: Path, container: str, ensure_ascii: bool, one_line: bool = False):
        private_dir(path.parent)  # exports hold decrypted secrets
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.fh = open_private(self.tmp)
        self.container = container
        self.ensure_ascii = ensure_ascii
        self.one_line = one_line
        self.count = 0

    def _dump(self, value) -> str:
        if self.one_line:
            return json.dumps(value, ensure_ascii=self.ensure_ascii)
        return json.dumps(value, ensure_ascii=self.ensure_ascii, indent=2).replace("\n", "\n  ")

    def add(self, record, key: str | None = None) -> None:
        sep = ("{" if self.container == "dict" else "[") if self.count == 0 else ","
        if self.one_line:
            self.fh.write(sep if self.count == 0 else ", ")
        else:
            self.fh.write(sep + "\n  ")
        if self.container == "dict":
            self.fh.write(json.dumps(key, ensure_ascii=self.ensure_ascii) + ": ")
        self.fh.write(self._dump(record))
        self.count += 1

    def close(self) -> None:
        if self.count == 0:
            self.fh.write("{}" if self.container == "dict" else "[]")
        else:
            close = "}" if self.container == "dict" else "]"
            self.fh.write(close if self.one_line else "\n" + close)
        self.fh.close()
        os.replace(self.tmp, self.path)


def write_object(path: Path, obj, ensure_ascii: bool) -> None:
    private_dir(path.parent)
    with open_private(path) as fh:
        fh.write(json.dumps(obj, ensure_ascii=ensure_ascii, indent=2))
