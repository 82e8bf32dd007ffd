"""Reading and writing the legacy JSON files exactly as AgentForge did.

Every file is read record by record with the standard library's JSON decoder, so memory
follows the largest record, not the file; what a record may hold is limited (see
"reading" below). Writing reproduces the legacy
formatting: indent 2, ``ensure_ascii=False`` for security files and ``True`` for app
files, ``chunks_index.json`` on one line, no trailing newline.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import math
import os
import re
from pathlib import Path
from typing import Iterator

from agentforge_core import native
from agentforge_site.files import open_private, private_dir
from legacy.format.errors import LegacyDataError, describe

try:  # decodes a plain record about 3x as fast as the standard library (docs/import.md)
    import orjson
except ImportError:  # the standard library's decoder then, record by record
    orjson = None

UTC = dt.timezone.utc
# Above this size a malformed streamed file gets an approximate position only.
EXACT_ERROR_LIMIT = 64 * 1024 * 1024
READ_CHUNK = 64 * 1024


def confined(root: Path, path: Path, label: str) -> Path:
    """``path`` when its real location is inside the data directory ``root``; a symbolic
    link out of it (``lab/x.json`` -> any JSON file of the machine) is refused."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise LegacyDataError(label, f"links outside the data directory (to {real}); refused")
    return path


def legacy_file(root: Path, path: Path, label: str) -> Path | None:
    """``path`` when it is a regular file inside the data directory, None when nothing is there.

    Anything else in a legacy file's place is refused rather than skipped: skipping a
    directory, a broken link or a FIFO named ``agents.json`` would import no agents and
    report success."""
    for parent in reversed(path.relative_to(root).parents[:-1]):
        folder = root / parent
        if folder.exists() and not folder.is_dir():
            raise LegacyDataError(label, f"{parent}/ is not a directory")
    if not os.path.lexists(path):
        return None
    if path.is_symlink() and not path.exists():
        raise LegacyDataError(label, f"a broken symbolic link (to {os.readlink(path)}); refused")
    confined(root, path, label)
    if path.is_dir():
        raise LegacyDataError(label, "a directory where a file should be; refused")
    if not path.is_file():
        raise LegacyDataError(label, "not a regular file (a FIFO, socket or device); refused")
    return path


# --- timestamps -----------------------------------------------------------------------


def parse_timestamp(value) -> dt.datetime:
    """A naive legacy timestamp is UTC; an explicit offset is honoured."""
    if native.utc_timestamp is not None:  # AgentForge's own form, in C
        parsed = native.utc_timestamp(value)
        if parsed is not None:
            return parsed
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        # Parsing again with "+00:00" is several times cheaper than replace(tzinfo=...), and
        # this is every timestamp of an import; checked, as some forms do not take an offset.
        try:
            aware = dt.datetime.fromisoformat(value + "+00:00")
        except ValueError:
            aware = None
        if (
            aware is not None
            and aware.tzinfo is UTC
            and aware.time() == parsed.time()
            and aware.date() == parsed.date()
        ):
            return aware
        return parsed.replace(tzinfo=UTC)
    return parsed


def format_timestamp(value: dt.datetime | None) -> str | None:
    """``datetime.utcnow().isoformat()`` style: naive UTC, fraction only when non-zero."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat()


# --- reading ----------------------------------------------------------------------------
# Every file is read record by record with the standard library's JSON decoder (C): a
# record's text is decoded as soon as it is complete, so memory follows the largest record,
# not the file. What one record may hold is limited (docs/import.md#limits): a data
# directory is input from outside, and a file nesting a list 200,000 deep, a 5,000-digit
# number or a NUL character must end in one line naming file and record, not a traceback
# or an exhausted machine.

MAX_DEPTH = 64  # nested objects and lists in one record
MAX_TEXT = 16 * 1024 * 1024  # characters in one string
MAX_RECORD = 64 * 1024 * 1024  # characters of one record's JSON text
INT_RANGE = (-(2**63), 2**63 - 1)  # what a BIGINT column or any JSON column of ours can hold
# Read 256 KiB at a time: a block of 1 MiB (and the text decoded from it) is above glibc's trim
# threshold, so every refill took fresh pages from the kernel (about 20,000 page faults and a
# tenth of the CPU of reading 60 MiB).
STREAM_CHUNK = 256 * 1024
BATCH_RECORDS = 256  # records of a list file decoded per C call (native.scan_objects)


class _Refused(ValueError):
    """Raised by the decoder hooks: valid JSON we do not accept."""


def _object(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):  # a duplicate key would silently keep the last value
        seen = set()
        for key, _value in pairs:
            if key in seen:
                raise _Refused(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _constant(name):
    raise _Refused(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant)
# Decodes what _DECODER refuses, only to find the id of the record to name in the error.
_LENIENT = json.JSONDecoder(parse_int=str, parse_constant=str)
_WHITESPACE = json.decoder.WHITESPACE.match
# In a record's text, the escapes of a NUL or a surrogate: a sign that its values need the
# full check (_problem). A regex with a literal start: the search skips ahead in C.
_ESCAPES = re.compile(r"\\u(?:0000|[dD][89abcdefABCDEF])")


def _text_problem(text: str) -> str | None:
    if len(text) > MAX_TEXT:
        return f"text of {len(text):,} characters (at most {MAX_TEXT:,})"
    if "\x00" in text:
        return "NUL character (\\u0000) in text"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "lone surrogate (\\ud800-\\udfff) in text: not a character"
    return None


def _problem(value) -> tuple[str, str] | None:
    """The first value of a decoded record we refuse: (field path, reason), or None."""
    stack = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        kind = type(item)
        if kind is str:
            reason = _text_problem(item)
            if reason:
                return path, reason
        elif kind is int:
            if not INT_RANGE[0] <= item <= INT_RANGE[1]:
                return path, f"integer of {len(str(abs(item)))} digits: out of the 64-bit range"
        elif kind is float:
            if not math.isfinite(item):
                return path, f"{item} is not a JSON number"
        elif kind is dict or kind is list:
            if depth > MAX_DEPTH:
                return path, f"nested deeper than {MAX_DEPTH} levels"
            if kind is dict:
                for key, member in item.items():
                    reason = _text_problem(key)
                    if reason:
                        return path, f"key {describe(key)}: {reason}"
                    stack.append((member, f"{path}.{key}" if path else key, depth + 1))
            else:
                stack.extend((member, f"{path}[{i}]", depth + 1) for i, member in enumerate(item))
    return None


def _record_name(outer_key, record, index: int):
    if outer_key is not None:
        return outer_key
    if isinstance(record, dict) and isinstance(record.get("id"), (str, int)) and not isinstance(record.get("id"), bool):
        return record["id"]
    return f"#{index}"  # the index-th record of the file


class _Records:
    """The records of one dict or list file, decoded one at a time from a sliding buffer."""

    def __init__(self, path: Path, label: str, container: str, unique_keys: bool):
        self.path, self.label, self.container = path, label, container
        self.keys = set() if unique_keys and container == "dict" else None
        self.buf, self.pos, self.offset, self.eof = "", 0, 0, False  # offset: characters before buf
        self.long_number = False  # the record being decoded has an integer of 19+ digits
        # With the hooks, Python code runs for every object and integer; agentforge_core._native
        # tells the same from the record's text instead: a duplicate key (fewer keys decoded
        # than the text separates: decoded again with the hooks, which name it) and a long number.
        self.checked_scan = json.JSONDecoder(
            object_pairs_hook=_object, parse_constant=_constant, parse_int=self._int
        ).scan_once
        self.fast = native.json_text_facts is not None
        self.scan = json.JSONDecoder(parse_constant=_constant).scan_once if self.fast else self.checked_scan

    def _int(self, digits: str) -> int:
        if len(digits) > 18:
            self.long_number = True
        return int(digits)  # more than 4,300 digits: ValueError, reported as too large

    def _fill(self, raw, decoder, at_least: int = 0) -> bool:
        """Read more; False at the end of the file."""
        if self.eof:
            return False
        pending = len(self.buf) - self.pos
        if pending > MAX_RECORD:
            return False
        block = raw.read(max(at_least, pending, STREAM_CHUNK))  # doubling: a big record is re-decoded O(log n) times
        self.eof = not block
        self.offset += self.pos
        self.buf = self.buf[self.pos :] + decoder.decode(block, final=self.eof)
        self.pos = 0
        return True

    def _skip(self, raw, decoder) -> str:
        """The next character that is not whitespace ("" at the end)."""
        while True:
            self.pos = _WHITESPACE(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill(raw, decoder):
                return ""

    def _malformed(self, at: int, detail: str) -> LegacyDataError:
        return _position_error(self.path, self.label, self.offset + at, detail)

    def _value(self, raw, decoder, index: int, outer_key):
        """Decode the value at pos (the record, or a dict file's key); refill while it is cut."""
        while True:
            start = self.pos
            try:
                try:
                    value, end = self.scan(self.buf, start)
                    if self.fast and type(value) is not str and (end < len(self.buf) or self.eof):
                        value = self._checked(value, start, end)
                except StopIteration as stop:  # what raw_decode turns into "Expecting value"
                    raise json.JSONDecodeError("Expecting value", self.buf, stop.value) from None
            except json.JSONDecodeError as exc:
                # Near the end of the buffer the text may just be cut (in a literal like
                # "tr|ue", an escape, a string): read more and decode again.
                cut = len(self.buf) - exc.pos <= 16 or exc.msg.startswith("Unterminated string")
                if cut and self._fill(raw, decoder, at_least=len(self.buf)):
                    continue
                if cut and len(self.buf) - self.pos > MAX_RECORD:
                    raise LegacyDataError(
                        self.label, f"record larger than {MAX_RECORD:,} characters", f"#{index}"
                    ) from None
                raise self._malformed(exc.pos, exc.msg) from None
            except (_Refused, ValueError, RecursionError) as exc:
                if isinstance(exc, RecursionError):
                    reason = f"nested deeper than {MAX_DEPTH} levels"
                elif isinstance(exc, _Refused):
                    reason = str(exc)
                else:  # int(): more digits than Python converts
                    reason = "a number too large (out of the 64-bit range)"
                raise LegacyDataError(self.label, reason, self._lenient_name(start, outer_key, index)) from None
            if end >= len(self.buf) and not self.eof and self._fill(raw, decoder):
                continue  # a number at the end of the buffer may go on in the next block
            self.pos = end
            return value, start, end

    def _checked(self, value, start: int, end: int):
        """``value``, or decoded again with the hooks when its text separates more keys than it
        holds: a duplicate key, which the hooks refuse by name."""
        pairs, self.long_number = native.json_text_facts(self.buf, start, end)
        if pairs != native.member_count(value):
            value, _end = self.checked_scan(self.buf, start)
        return value

    def _lenient_name(self, start: int, outer_key, index: int):
        try:
            record, _end = _LENIENT.raw_decode(self.buf, start)
        except (ValueError, RecursionError):
            record = None
        return _record_name(outer_key, record, index)

    def __iter__(self):
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        opening, closing = ("{", "}") if self.container == "dict" else ("[", "]")
        with open(self.path, "rb") as raw:
            if self._skip(raw, decoder) != opening:
                raise self._malformed(self.pos, "not JSON")
            self.pos += 1
            index = 0
            # (a small dict file's keys are checked for repeats: record by record, below)
            batch = native.scan_objects if self.fast and self.keys is None else None
            keyed = self.container == "dict"
            loads = orjson.loads if orjson is not None else None
            while True:
                char = self._skip(raw, decoder)
                if char == closing and index == 0:
                    self.pos += 1
                    break
                if batch:
                    # A run of plain records in one C call; the first other one comes here.
                    records, self.pos, done = batch(
                        self.scan, loads, self.buf, self.pos, MAX_DEPTH, MAX_TEXT, BATCH_RECORDS, keyed
                    )
                    for record in records:
                        index += 1
                        yield record if keyed else (None, record)
                    if done:
                        break
                    if records:
                        char = self._skip(raw, decoder)
                index += 1
                outer_key = None
                if self.container == "dict":
                    if char != '"':
                        raise self._malformed(self.pos, "Expecting property name enclosed in double quotes")
                    outer_key, _start, _end = self._value(raw, decoder, index, None)
                    if self.keys is not None:
                        if outer_key in self.keys:
                            raise LegacyDataError(self.label, f"duplicate key {outer_key!r}", outer_key)
                        self.keys.add(outer_key)
                    if self._skip(raw, decoder) != ":":
                        raise self._malformed(self.pos, "Expecting ':' delimiter")
                    self.pos += 1
                    self._skip(raw, decoder)
                self.long_number = False
                record, start, end = self._value(raw, decoder, index, outer_key)
                buf = self.buf  # the record is buf[start:end]: searched in place, not copied
                if (
                    self.long_number
                    or end - start > MAX_TEXT
                    or buf.count("{", start, end) + buf.count("[", start, end) > MAX_DEPTH
                    or (buf.find("\\u", start, end) >= 0 and _ESCAPES.search(buf, start, end))
                ):
                    found = _problem(record)
                    if found is not None:
                        raise LegacyDataError(
                            self.label, found[1], _record_name(outer_key, record, index), found[0] or None
                        )
                if self.container == "list" and not isinstance(record, dict):
                    raise LegacyDataError(self.label, f"expected an object, got {describe(record)}", f"#{index}")
                yield outer_key, record
                char = self._skip(raw, decoder)
                if char == closing:
                    self.pos += 1
                    break
                if char != ",":
                    raise self._malformed(self.pos, "Expecting ',' delimiter")
                self.pos += 1
            if self._skip(raw, decoder) != "":
                raise self._malformed(self.pos, "Extra data")


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
            with open(path, encoding="utf-8-sig") as fh:
                json.load(fh)
        except json.JSONDecodeError as exc:
            return LegacyDataError(label, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
        except UnicodeDecodeError as exc:
            return LegacyDataError(label, f"not UTF-8 text (byte {exc.start}): {exc.reason}")
        except (ValueError, RecursionError):
            pass
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
    """Load a whole (small) file with the same rules as the records of the others; errors name
    the file, line and column, or the field."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            value = _DECODER.decode(fh.read())
    except json.JSONDecodeError as exc:
        raise LegacyDataError(label, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise LegacyDataError(label, f"not UTF-8 text (byte {exc.start}): {exc.reason}") from None
    except OSError as exc:
        raise LegacyDataError(label, f"cannot read: {exc.strerror}") from None
    except _Refused as exc:
        raise LegacyDataError(label, str(exc)) from None
    except RecursionError:
        raise LegacyDataError(label, f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise LegacyDataError(label, "a number too large (out of the 64-bit range)") from None
    found = _problem(value)
    if found is not None:
        raise LegacyDataError(label, found[1], field=found[0] or None)
    return value


def iter_container(
    path: Path, label: str, container: str, unique_keys: bool = False
) -> Iterator[tuple[str | None, object]]:
    """Yield ``(outer_key, record)`` of a dict file or ``(None, item)`` of a list file, one
    record in memory at a time."""
    first = _first_char(path)
    if first == "":
        raise LegacyDataError(
            label, "file is empty (expected " + ("an object" if container == "dict" else "a list") + ")"
        )
    expected = "{" if container == "dict" else "["
    if first != expected:
        if first in "{[":
            kind = "an object" if first == "{" else "a list"
            want = "an object keyed by id" if container == "dict" else "a list"
            raise LegacyDataError(label, f"expected {want} at the top level, got {kind}")
        raise _position_error(path, label, 0, "not JSON")
    try:
        yield from _Records(path, label, container, unique_keys)
    except UnicodeDecodeError as exc:
        raise LegacyDataError(label, f"not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise LegacyDataError(label, f"cannot read: {exc.strerror}") from None


def read_records(path: Path, label: str, container: str, stream: bool) -> Iterator[tuple[str | None, object]]:
    """The records of a dict or list file. A small (not ``stream``) dict file's ids are also
    checked for duplicates; a big one's are left to the writer (a set of every id would grow
    with the file)."""
    yield from iter_container(path, label, container, unique_keys=not stream)


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


# --- writing ----------------------------------------------------------------------------


class JSONWriter:
    """Write one legacy file incrementally, formatted like ``json.dump(obj, indent=2)``.

    The text goes to ``<file>.tmp``; :meth:`close` fsyncs it and renames it over the file, so
    an export that fails (disk full, a secret it cannot decrypt, Ctrl-C) leaves the previous
    file whole, never a truncated one. :meth:`abort` drops the temporary file."""

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
        replace_atomically(self.fh, self.tmp, self.path)

    def abort(self) -> None:
        discard_temporary(self.fh, self.tmp)


def write_object(path: Path, obj, ensure_ascii: bool) -> None:
    """One whole-object file, atomically (see JSONWriter)."""
    private_dir(path.parent)
    text = json.dumps(obj, ensure_ascii=ensure_ascii, indent=2)
    tmp = path.with_name(path.name + ".tmp")
    fh = open_private(tmp)
    try:
        fh.write(text)
    except BaseException:
        discard_temporary(fh, tmp)
        raise
    replace_atomically(fh, tmp, path)


# --- atomic files (these exports, and the parallel run's record files) ------------------------


def replace_atomically(fh, tmp, path: Path) -> None:
    """Make the temporary file ``tmp``, written through ``fh``, the file at ``path``: fsync it,
    rename it over ``path``, fsync the directory. On any failure the temporary file goes and
    ``path`` keeps its previous content whole."""
    try:
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        os.replace(tmp, path)
    except BaseException:
        discard_temporary(fh, tmp)
        raise
    fsync_dir(path.parent)


def discard_temporary(fh, tmp) -> None:
    try:
        fh.close()
    except OSError:
        pass  # ENOSPC again while flushing what is buffered: the file goes anyway
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
