"""Two processes for the big streamed files of an import (audit logs, conversations).

A forked *reader* process parses the JSON, validates and maps every record and encodes its
rows as the database will receive them (COPY text lines on PostgreSQL, ``VALUES`` literals
on MariaDB/MySQL, parameter tuples on SQLite), including the canonical text of each audit
entry's hash. The importing process keeps the one transaction: it checks that the rows are
new, extends the audit chain (one SHA-256 per entry) and writes. Reading and mapping cost
more than writing, and the two now run side by side on two cores.

It is a fast lane for a fresh import, not a second implementation:

* a record the reader cannot map (bad data, a reference only the database can resolve) is
  passed on raw and mapped by the importing process exactly as without the pipeline, so
  errors and warnings are the same;
* rows that exist already, duplicate ids, merged rows and child sets abort the lane
  (:class:`PipelineAbort`): the collection's savepoint is rolled back and the collection is
  imported again in one process by the ordinary path (``legacy.migration.writer.Writer``).

The reader never touches the database: its copy of the connection is replaced by an object
that raises, and it leaves with ``os._exit`` so that no finaliser closes the importing
process's connection.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import ipaddress
import os
import pickle
import queue
import signal
import threading
import traceback
import uuid
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, models

from agentforge_core import native
from agentforge_core.jsontext import json_encoder
from agentforge_core.native import (
    COPY_BOOL,
    COPY_CALL,
    COPY_CONST,
    COPY_INT,
    COPY_IPV4,
    COPY_JSON,
    COPY_TEXT,
    COPY_TIME,
    COPY_UUID,
)
from legacy.format.errors import LegacyDataError
from legacy.format.jsonio import read_records
from legacy.migration.writer import BATCH

ROWS_PER_MESSAGE = 1000  # rows per pickled message from the reader
PIPE_SIZE = 1 << 20  # Linux caps an unprivileged pipe at 1 MiB by default
# The importer's read buffer. pickle.load copies out all that is buffered (peek) for every
# frame: with a 1 MiB buffer those copies were fresh pages from the kernel each time.
READ_BUFFER = 64 << 10
QUEUED_MESSAGES = 4  # messages read ahead while the database works (a few MiB)


_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _HeldSignals:
    """SIGINT and SIGTERM wait from here to :meth:`release`, which delivers them in this thread.

    Blocking them (``pthread_sigmask``) holds them only for this thread: when the process has
    other threads (psycopg's pool workers), the kernel hands the signal to one of them and
    Python runs the handler in the main thread at its next instruction anyway. So, in the
    main thread, the handlers are swapped for one that only notes the signal as well."""

    def __init__(self):
        self.received: list[int] = []
        self.previous: dict[int, object] = {}
        signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
        if threading.current_thread() is threading.main_thread():
            for signum in _DEFERRED_SIGNALS:
                handler = signal.getsignal(signum)
                if handler is not None:  # None: set outside Python, cannot be put back
                    self.previous[signum] = signal.signal(signum, self._note)

    def _note(self, signum, frame) -> None:
        if signum not in self.received:
            self.received.append(signum)

    def release_in_reader(self) -> None:
        """In the forked reader: Ctrl-C is the importing process's to handle; SIGTERM just ends it."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED_SIGNALS)

    def release(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED_SIGNALS)
        for signum in self.received:  # its handler runs (and may raise) before this returns
            signal.raise_signal(signum)


class PipelineAbort(Exception):
    """The rows are not all plain new inserts: import the collection in one process."""


class NeedsDatabase(Exception):
    """The reader process tried to use the database, which belongs to the importing process."""


# --- eligibility -----------------------------------------------------------------------------


def models_of(mapper) -> list:
    from django.apps import apps

    models = [mapper.model]
    for _label, model in mapper.satellites:
        models.append(apps.get_model(model) if isinstance(model, str) else model)
    return models


def eligible(mapper, file_path, ctx) -> str | None:
    """Why the pipeline cannot run for this file, or None when it can."""
    if not mapper.pipeline:
        return "not a pipelined collection"
    if not settings.LEGACY_IMPORT_PIPELINE:
        return "disabled (LEGACY_IMPORT_PIPELINE)"
    if not hasattr(os, "fork"):
        return "no fork() on this platform"
    if ctx.dry_run:
        return "dry run"
    if connection.vendor not in ("postgresql", "mysql", "sqlite"):
        return f"no encoder for {connection.vendor}"
    if file_path.stat().st_size < settings.LEGACY_IMPORT_PIPELINE_MIN_BYTES:
        return "small file"
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@SESSION.sql_mode")
            if "NO_BACKSLASH_ESCAPES" in (cursor.fetchone()[0] or "").upper():
                return "sql_mode NO_BACKSLASH_ESCAPES"
    # A re-run finds its rows; the ordinary path compares and updates them.
    for model in models_of(mapper):
        if model._base_manager.filter(legacy_id__isnull=False).exists():
            return f"{model._meta.db_table} holds imported rows already"
    return None


def complete_models(ctx) -> set:
    """Models whose imported rows in the database are exactly the ids of the files read.

    For these the reader resolves a reference the files do not know as dangling (what the
    database would answer) instead of handing the record back."""
    complete = set()
    for model, ids in ctx.source_ids.items():
        if model._base_manager.filter(legacy_id__isnull=False).count() == len(ids):
            complete.add(model)
    return complete


# --- encoding rows for each backend ----------------------------------------------------------


def _pg_text(value) -> str:
    """One field of PostgreSQL's COPY text format."""
    t = type(value)
    if t is str:
        return _pg_escape(value)
    if value is None:
        return "\\N"
    if t is bool:
        return "t" if value else "f"
    if t is int or t is float or t is Decimal or t is uuid.UUID:
        return str(value)
    if t is dt.datetime or t is dt.date:
        return value.isoformat()
    if t is bytes or t is memoryview:
        return "\\\\x" + bytes(value).hex()  # bytea hex format, its backslash escaped for COPY
    if isinstance(
        value, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Interface, ipaddress.IPv6Interface)
    ):
        return str(value)
    raise TypeError(f"cannot encode {t.__name__} for COPY")


_PG_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))  # backslash first
_MYSQL_ESCAPES = (
    ("\\", "\\\\"),
    ("\0", "\\0"),
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("'", "\\'"),
    ('"', '\\"'),
    ("\x1a", "\\Z"),
)


def _mysql_literal(value) -> str:
    """A MariaDB/MySQL literal, escaped as mysql_real_escape_string does for utf8mb4."""
    t = type(value)
    if t is str:
        return "'" + _mysql_escape(value) + "'"
    if value is None:
        return "NULL"
    if t is bool:
        return "1" if value else "0"
    if t is int or t is float or t is Decimal:
        return str(value)
    if t is bytes or t is memoryview:
        return "X'" + bytes(value).hex() + "'"
    raise TypeError(f"cannot encode {t.__name__} as a MySQL literal")


def _pg_escape(value: str) -> str:
    for char, escaped in _PG_ESCAPES:
        if char in value:
            value = value.replace(char, escaped)
    return value


def _mysql_escape(value: str) -> str:
    for char, escaped in _MYSQL_ESCAPES:
        if char in value:
            value = value.replace(char, escaped)
    return value


_NO_ORG = object()  # RowEncoder.last_org before the first audit entry
_PLAIN_TEXT_FIELDS = (models.CharField, models.TextField, models.EmailField, models.SlugField, models.URLField)
_INTEGER_FIELDS = (
    models.IntegerField,
    models.BigIntegerField,
    models.SmallIntegerField,
    models.PositiveIntegerField,
    models.PositiveSmallIntegerField,
    models.PositiveBigIntegerField,
    models.AutoField,  # a reference to an integer key (auditlog's content type)
    models.BigAutoField,
    models.SmallAutoField,
)


# A fast path compiled into the row builder (legacy.migration.writer._ModelPlan.tuple_builder):
# {value} is the column's value, {slow} the encoder itself for what the fast path leaves.
_INLINE_NAMES = {
    "_esc_mysql": _mysql_escape,
    "_UUID": uuid.UUID,
    "_datetime": dt.datetime,
}
_PG_TEXT = (  # a text with none of the characters COPY escapes is its own COPY text
    f"(x if type(x := {{value}}) is str and {' and '.join(f'{c!r} not in x' for c, _ in _PG_ESCAPES)}"
    f' else "\\\\N" if x is None else {{slow}}(x))'
)


def _inline(encoder, template: str, native_kind: int = COPY_CALL):
    encoder.inline = (template, _INLINE_NAMES)
    encoder.native = native_kind  # the same fast path in agentforge_core._native (PostgreSQL)
    return encoder


def _column_encoder(field, prep, vendor: str):
    """value → its text in a COPY line (PostgreSQL) or a literal (MariaDB/MySQL).

    The common column types are written directly; anything else goes through the
    writer's converter (``prep``, what ``Writer`` binds as a parameter) and then the
    generic encoder, so both paths store the same thing. Each direct encoder also carries
    its common case as an expression (``inline``) that the row builder compiles in, which
    saves a Python call per column of every row."""
    generic = _pg_text if vendor == "postgresql" else _mysql_literal
    null = "\\N" if vendor == "postgresql" else "NULL"

    def through_prep(value):
        return generic(prep(value))

    if getattr(field, "encrypted", False):
        return through_prep
    kind = type(field.target_field if field.is_relation else field)
    if kind is models.UUIDField:
        if vendor == "postgresql":  # PostgreSQL reads the 32-digit form as well
            return _inline(
                lambda v: v.hex if type(v) is uuid.UUID else through_prep(v),
                "(x.hex if type(x := {value}) is _UUID else {slow}(x))",
                COPY_UUID,
            )
        return _inline(
            lambda v: "'" + v.hex + "'" if type(v) is uuid.UUID else through_prep(v),
            '("\'" + x.hex + "\'" if type(x := {value}) is _UUID else {slow}(x))',
        )
    if field.is_relation and kind not in _INTEGER_FIELDS:
        return through_prep
    if kind in _PLAIN_TEXT_FIELDS:
        if vendor == "postgresql":
            return _inline(
                lambda v: _pg_escape(v) if type(v) is str else null if v is None else through_prep(v),
                _PG_TEXT,
                COPY_TEXT,
            )
        return _inline(
            lambda v: "'" + _mysql_escape(v) + "'" if type(v) is str else null if v is None else through_prep(v),
            '("\'" + _esc_mysql(x) + "\'" if type(x := {value}) is str else "NULL" if x is None else {slow}(x))',
        )
    if kind is models.DateTimeField and vendor == "postgresql":
        return _inline(
            lambda v: v.isoformat() if type(v) is dt.datetime and v.tzinfo is not None else through_prep(v),
            "(x.isoformat() if type(x := {value}) is _datetime and x.tzinfo is not None else {slow}(x))",
            COPY_TIME,
        )
    if kind is models.JSONField:
        if vendor == "postgresql":  # jsonb keeps no formatting: any valid text will do
            return _jsonb
        return through_prep  # the text is stored as it is: keep the writer's
    if kind is models.BooleanField:
        true, false = ("t", "f") if vendor == "postgresql" else ("1", "0")
        return _inline(
            lambda v: true if v is True else false if v is False else through_prep(v),
            f'("{true}" if (x := {{value}}) is True else "{false}" if x is False else {{slow}}(x))',
            COPY_BOOL if vendor == "postgresql" else COPY_CALL,
        )
    if kind in _INTEGER_FIELDS:
        return _inline(
            lambda v: str(v) if type(v) is int else null if v is None else through_prep(v),
            f"(str(x) if type(x := {{value}}) is int else {null!r} if x is None else {{slow}}(x))",
            COPY_INT if vendor == "postgresql" else COPY_CALL,
        )
    if kind is models.GenericIPAddressField and vendor == "postgresql":
        # canonical IPv4 text as given; anything else normalised by the field first
        return _inline(
            lambda v: v if type(v) is str and ":" not in v and v else _pg_text(field.get_db_prep_save(v, connection)),
            '(x if type(x := {value}) is str and x and ":" not in x else {slow}(x))',
            COPY_IPV4,
        )
    return through_prep


# json.dumps builds its C encoder on every call; an audit entry has four JSON columns.
_json_text = json_encoder(separators=(",", ":"), ensure_ascii=False)


def _jsonb(v):
    if v is None:
        return "\\N"
    if not v and type(v) in (list, dict):
        return "[]" if type(v) is list else "{}"
    return _pg_escape(_json_text(v))


_jsonb.native = COPY_JSON


class RowEncoder:
    """Rows of one model → their payloads (audit entries: with their chain's key and hash text).

    The payload is a COPY text line (PostgreSQL, UTF-8 bytes), a ``(…)`` literal (MariaDB/MySQL)
    or the parameter tuple (SQLite). An audit entry's payload stops before its two chain columns
    (always the last two, see ``legacy.migration.writer._ModelPlan``); :meth:`seal` appends them.
    """

    def __init__(self, plan, vendor: str, chain=None, code: int = 0):
        self.plan = plan
        self.code = code  # what names the model beside each row through the pipe (a class pickles slowly)
        self.vendor = vendor
        self.chain = chain if chain is not None and chain.model is plan.model else None
        self.chain_keys = {}  # org_id -> its chain's key
        self.last_org, self.last_key = _NO_ORG, None
        if self.chain is not None:
            self.hash_parts = self.chain.hasher.parts
        self.unique_keys = set()  # key columns found unique in the database
        if self.chain is not None and not plan.chained:
            raise ValueError(f"{plan.table}: the chain columns must come last")
        if vendor in ("postgresql", "mysql"):
            self.converters = {a: _column_encoder(plan.by_attname[a], plan.prep[a], vendor) for a in plan.attnames}
            self.fields = plan.tuple_builder(self.converters)
        else:
            self.fields = plan.insert_tuple
        self.payload = self._python_payload
        if (vendor == "postgresql" and native.CopyRow is not None) or (
            vendor == "sqlite" and native.ParamRow is not None
        ):
            self._lines = {}  # key shape -> its compiled native.CopyRow or ParamRow, exact
            self._line = None  # the last one, when it takes any row of its keys (exact)
            self.payload = self._native_payload

    def encode(self, row):
        """The row's payload, or for an audit entry ``(payload, chain key, hash head, hash tail)``.

        Its key must be unique in the database: a row that exists already or comes twice (a
        re-run, a repeated id) then fails the insert, and the lane falls back to the ordinary
        path, which compares and merges. No key travels with the row."""
        if row.merge is not None or len(row.key_fields) != 1:
            raise PipelineAbort(f"{self.plan.table}: rows merged by key")
        if row.key_fields[0] not in self.unique_keys:
            if not self.plan.by_attname[row.key_fields[0]].unique:
                raise PipelineAbort(f"{self.plan.table}: rows keyed by a column that is not unique")
            self.unique_keys.add(row.key_fields[0])
        values = row.values
        if self.chain is None:
            return self.payload(values)
        try:
            head, tail = self.hash_parts(values)
        except KeyError:  # a column not given: the chain fills in its default, hashed and written
            head, tail = self.chain.hash_parts(values)
        org_id = values.get("org_id")
        if org_id is not self.last_org:  # the mapper's cached UUID: one organization runs on
            chain_key = self.chain_keys.get(org_id)  # str(UUID) is Python code; a few organizations repeat
            if chain_key is None:
                if len(self.chain_keys) > 1000:
                    self.chain_keys.clear()
                chain_key = self.chain_keys[org_id] = self.chain.audit.chain_key(org_id)
            self.last_org, self.last_key = org_id, chain_key
        return self.payload(values), self.last_key, head, tail

    def _python_payload(self, values):
        fields = self.fields(values)
        if self.chain is None:
            return self._payload(fields, closed=True)
        return self._payload(fields[:-2], closed=False)

    def _native_payload(self, values):
        """The COPY line (PostgreSQL) or parameters (SQLite) from agentforge_core._native: the
        same as the Python path's, built in C."""
        line = self._line
        if line is not None:  # the last key set's line: it takes rows of exactly those keys
            try:
                payload = line(values)
            except KeyError:  # as many keys, another set
                payload = None
            if payload is not None:
                return payload
        shape = tuple(values)
        compiled = self._lines.get(shape)
        if compiled is None:
            compiled = self._lines[shape] = self._native_line(shape)
        line, exact = compiled
        self._line = line if exact else None
        return line(values)

    def _native_line(self, shape: tuple):
        sources = self.plan.sources(shape)
        if self.chain is not None:
            sources = sources[:-2]  # the chain's two columns: seal() appends them
        # exact: every key of the shape is a column given (no other key a row could carry)
        exact = sum(source == "given" for _a, source, _d in sources) == len(shape)
        if self.vendor == "sqlite":  # packed: one bytes object through the pipe, unpacked by the writer
            columns = [self._param_column(*source) for source in sources]
            return native.ParamRow(columns, exact=exact, packed=native.unpack_rows is not None), exact
        columns = [self._copy_column(*source) for source in sources]
        return native.CopyRow(columns, closed=self.chain is None, exact=exact), exact

    def _copy_column(self, attname: str, source: str, default) -> tuple:
        """A PostgreSQL column of native.CopyRow, as the column's encoder writes it."""
        encode = self.converters[attname]
        kind = getattr(encode, "native", COPY_CALL)
        if source == "given":
            return (attname, kind, encode, _json_text if kind == COPY_JSON else None)
        if source == "static":
            return (None, COPY_CONST, None, encode(default))
        return (None, COPY_CALL if kind == COPY_JSON else kind, encode, default)  # a default factory's value

    def _param_column(self, attname: str, source: str, default) -> tuple:
        """A SQLite column of native.ParamRow, as the writer's row builder converts it."""
        convert = self.plan.prep.get(attname)
        kind = native.PARAM_SAME if convert is None else getattr(convert, "param", native.PARAM_CALL)
        if source == "given":
            return (attname, kind, convert, None)
        if source == "static":
            return (None, native.PARAM_CONST, None, default if convert is None else convert(default))
        return (None, kind, convert, default)  # a default factory's value, converted

    def _payload(self, fields, closed: bool):
        if self.vendor == "postgresql":  # the bytes COPY sends
            text = "\t".join(fields)
            return (text + "\n" if closed else text).encode()
        if self.vendor == "mysql":
            text = "(" + ",".join(fields)
            return text + ")" if closed else text
        return fields

    def seal_all(self, items: list) -> list:
        """Audit entries ``(payload, chain key, hash head, hash tail)`` in order, each linked to
        its chain: their rows with the chain's two columns."""
        link, seal, chain = self.chain.link, self.seal, self.chain
        if self.vendor not in ("postgresql", "sqlite") or native.seal_rows is None:
            return [seal(payload, *link(key, head, tail)) for payload, key, head, tail in items]
        rows, done, packed = [], 0, self.vendor == "sqlite"
        while True:  # in C, but for an entry of a chain new to the import or an unusual last hash
            done = native.seal_rows(items, done, chain.last, rows, hashlib.sha256, packed)
            if done == len(items):
                return rows
            payload, key, head, tail = items[done]
            rows.append(seal(payload, *link(key, head, tail)))
            done += 1

    def seal(self, payload, prev_hash, entry_hash):
        if self.vendor == "postgresql":
            return b"%s\t%s\t%s\n" % (payload, _pg_text(prev_hash).encode(), entry_hash.encode())
        if self.vendor == "mysql":
            return f"{payload},{_mysql_literal(prev_hash)},'{entry_hash}')"
        if type(payload) is bytes:  # SQLite's parameters packed by native.ParamRow
            payload = native.unpack_rows([payload])[0]
        return payload + (prev_hash, entry_hash)


def encode_mapped(mapped, encoders: dict) -> list:
    """``[(encoder code, item)]`` for the rows of a Mapped; PipelineAbort when it is not plain rows."""
    if mapped.children:
        raise PipelineAbort("child sets")
    out = []
    for row in mapped.rows:
        encoder = encoders.get(row.model)
        if encoder is None:
            raise PipelineAbort(f"no encoder for {row.model.__name__}")
        out.append((encoder.code, encoder.encode(row)))
    return out


# --- the reader process ------------------------------------------------------------------------


class _NoDatabase:
    def __getattr__(self, name):
        raise NeedsDatabase(name)


_inherited_connections = []  # kept referenced: freeing one would close the importer's socket


def _forbid_database() -> None:
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        _inherited_connections.append(conn.connection)
        conn.connection = _NoDatabase()


def _reader_main(mapper, file_path, ctx, encoders, complete, write_fd) -> None:
    status = 0
    try:
        _forbid_database()
        ctx.db_matches_source = complete
        out = os.fdopen(write_fd, "wb", buffering=PIPE_SIZE)
        batch, rows = [], 0
        try:
            for outer_key, record in read_records(file_path, mapper.file, mapper.container, stream=True):
                try:
                    mapped = mapper.to_rows(record, ctx, outer_key)
                    items = encode_mapped(mapped, encoders)
                except Exception:  # bad data, a reference for the database: the importer maps it
                    batch.append(("r", outer_key, record))
                    rows += 1
                else:
                    batch.append(("m", mapped.warnings, mapped.notes, items))
                    rows += len(items)
                if rows >= ROWS_PER_MESSAGE:
                    pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)
                    batch, rows = [], 0
        except LegacyDataError as exc:  # malformed JSON: the stream ends here
            batch.append(("e", exc.file, exc.detail, exc.record_id, exc.field))
        except Exception:
            batch.append(("x", traceback.format_exc(limit=6)))
        pickle.dump(batch, out, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.dump(None, out)
        out.flush()
    except BaseException:  # the importer went away (broken pipe) or we were interrupted
        status = 1
    finally:
        os._exit(status)


# --- the importing process -------------------------------------------------------------------


class _Sink:
    """Buffers encoded rows per model in input order and writes them in batches."""

    def __init__(self, writer, encoders: dict):
        self.writer = writer
        self.encoders = list(encoders.values())  # by code
        self.buffers: dict = {}

    def add(self, code: int, item) -> None:
        buffer = self.buffers.get(code)
        if buffer is None:
            buffer = self.buffers[code] = []
        buffer.append(item)
        if len(buffer) >= BATCH:
            self.flush(code)

    def flush_all(self) -> None:
        for code in list(self.buffers):
            self.flush(code)

    def flush(self, code: int) -> None:
        items = self.buffers.pop(code, None)
        if not items:
            return
        writer = self.writer
        encoder = self.encoders[code]
        plan = encoder.plan
        payloads = items if encoder.chain is None else encoder.seal_all(items)
        # Each row's key is unique in the database (RowEncoder.encode): a row that exists
        # already or comes twice fails the insert, the lane is abandoned and the ordinary
        # path compares and updates. No lookup per batch needed.
        try:
            writer.insert_encoded(plan, payloads)
        except (IntegrityError, connection.Database.IntegrityError) as exc:
            raise PipelineAbort(f"{plan.table}: {exc}".strip()) from exc
        writer.stats[plan.table].created += len(items)


def import_pipelined(mapper, file_path, ctx, writer, *, on_messages, fail, progress=None) -> int:
    """Import one streamed collection through a reader process; return the records read.

    ``on_messages(warnings, notes)`` records a mapped record's warnings; ``fail(error)``
    handles bad data (it raises). Raises PipelineAbort when the lane cannot finish; the
    caller rolls back to its savepoint and imports the collection the ordinary way.
    """
    vendor = connection.vendor
    encoders = {
        model: RowEncoder(writer.plan(model), vendor, writer.chain, code)
        for code, model in enumerate(models_of(mapper))
    }
    complete = complete_models(ctx)
    read_fd, write_fd = os.pipe()
    try:
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (OSError, AttributeError):
        pass  # a smaller pipe only means more context switches
    # Signals wait until both sides are ready for them: a Ctrl-C between fork() and the
    # ``try`` below would leave the reader running unreaped, and in the child it would unwind
    # through the importer's own stack.
    held = _HeldSignals()
    try:
        pid = os.fork()
    except BaseException:
        held.release()
        raise
    if pid == 0:  # pragma: no cover - the reader; coverage cannot follow os._exit
        held.release_in_reader()
        os.close(read_fd)
        _reader_main(mapper, file_path, ctx, encoders, complete, write_fd)
    pump = None
    count = 0
    try:
        os.close(write_fd)
        # While signals still wait: an interrupt inside fdopen() would leave the descriptor
        # closed by the half-built stream and then closed again here (EBADF instead of the
        # interrupt's one line).
        stream = os.fdopen(read_fd, "rb", buffering=READ_BUFFER)
    except BaseException:
        _stop(pid)  # first: release() delivers a held signal, which raises
        held.release()
        raise
    try:
        held.release()  # a signal that came meanwhile unwinds from here, through the finally
        # A thread empties the pipe while this one waits for the database, so the reader
        # never stalls on a full pipe (1 MiB is a fraction of a second of its work).
        messages: queue.Queue = queue.Queue(maxsize=QUEUED_MESSAGES)
        pump = threading.Thread(target=_pump, args=(stream, messages), name="import-pipeline", daemon=True)
        pump.start()
        sink = _Sink(writer, encoders)
        while True:
            message = messages.get()
            if message is None:
                break
            if isinstance(message, str):
                raise PipelineAbort(message)
            for item in message:
                kind = item[0]
                if kind == "m":
                    if item[1] or item[2]:
                        on_messages(item[1], item[2])
                    rows = item[3]
                elif kind == "r":
                    try:
                        mapped = mapper.to_rows(item[2], ctx, item[1])
                    except LegacyDataError as exc:
                        fail(exc)
                        count += 1
                        continue
                    on_messages(mapped.warnings, mapped.notes)
                    rows = encode_mapped(mapped, encoders)
                elif kind == "e":
                    fail(LegacyDataError(item[1], item[2], item[3], item[4]))
                    continue
                else:
                    raise PipelineAbort(f"the reader process failed:\n{item[1]}")
                for code, row in rows:
                    sink.add(code, row)
                count += 1
                if progress is not None and count % 1000 == 0:
                    progress(mapper.collection, count)
        sink.flush_all()
    finally:
        _stop(pid)  # its end of the pipe closes, so the pump stops after at most one message
        while pump is not None and pump.is_alive():
            try:
                messages.get(timeout=0.05)
            except queue.Empty:
                pass
        stream.close()
    return count


def _pump(stream, messages: queue.Queue) -> None:
    """Move the reader's messages into the queue: lists of items, then None; a str on failure."""
    try:
        while True:
            message = pickle.load(stream)
            messages.put(message)
            if message is None:
                return
    except EOFError:
        messages.put("the reader process ended early")
    except Exception as exc:  # a message cut short when the reader was stopped
        messages.put(f"reading from the reader process failed: {exc!r}")


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    # Reap it even when Ctrl-C or SIGTERM lands during the wait (its handler raises out of
    # waitpid): otherwise the killed reader outlives the import, unreaped. Then unwind.
    interrupted = None
    while True:
        try:
            os.waitpid(pid, 0)
            break
        except ChildProcessError:
            break
        except BaseException as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted
