"""Batched upserts of mapped rows by the fastest path each backend offers.

New rows go in with PostgreSQL ``COPY``, a multi-row ``INSERT`` on MariaDB/MySQL
(mysqlclient's ``executemany`` folds the rows into one statement) or ``executemany`` on
SQLite. Rows that exist already (found by their key, normally the deterministic UUID
primary key) are compared with the database: unchanged ones are left alone, changed
ones updated column by column, or left untouched with ``skip_existing``. Child sets
(user roles, role permissions, memberships, agent tools, password history) are replaced
per parent when they differ. Nothing is executed in dry-run mode.
"""

from __future__ import annotations

import datetime as dt
import operator
import uuid
from collections import defaultdict

from django.db import connection, reset_queries
from django.db.models import AutoField, BigAutoField

from accounts import rls
from agentforge_core import native
from agentforge_core.jsontext import json_encoder
from agentforge_core.models import scope_field
from agentforge_core.tenancy import unscoped
from agentforge_site.caching import rows_changed
from legacy.format.mappers.base import ChildSet, Mapped, Row

BATCH = 2000
COPY_ROWS_PER_WRITE = 128  # legacy.migration.pipeline's COPY lines: about 50 KiB a write
_CLOCK = operator.attrgetter("year", "month", "day", "hour", "minute", "second", "microsecond")
CHAIN_COLUMNS = ("prev_hash", "entry_hash")
UTC = dt.timezone.utc


class Stats:
    __slots__ = ("created", "updated", "unchanged", "skipped", "warnings")

    def __init__(self):
        self.created = self.updated = self.unchanged = self.skipped = self.warnings = 0


class _ModelPlan:
    """Column list and per-column converters (Python value -> DB parameter) of a model."""

    def __init__(self, model, now):
        self.model = model
        self.table = model._meta.db_table
        vendor = connection.vendor
        fields = [f for f in model._meta.concrete_fields if not isinstance(f, (AutoField, BigAutoField))]
        # The audit chain's two columns go last: the import pipeline encodes every other
        # column in its reader process and appends these once the chain is known.
        self.fields = [f for f in fields if f.attname not in CHAIN_COLUMNS] + [
            f for f in fields if f.attname in CHAIN_COLUMNS
        ]
        self.chained = [f.attname for f in self.fields[-2:]] == list(CHAIN_COLUMNS)
        self.by_attname = {f.attname: f for f in model._meta.concrete_fields}
        self.columns = [f.column for f in self.fields]
        self.attnames = [f.attname for f in self.fields]
        self.prep = {f.attname: _converter(f, vendor) for f in model._meta.concrete_fields}
        self.defaults = {}
        static = {}
        for f in self.fields:
            if getattr(f, "auto_now_add", False) or getattr(f, "auto_now", False):
                self.defaults[f.attname] = lambda now=now: now
                static[f.attname] = now
            elif f.has_default():
                default = f.default
                self.defaults[f.attname] = default if callable(default) else (lambda d=default: d)
                if not callable(default) or default in (dict, list):
                    static[f.attname] = default() if callable(default) else default
            else:
                self.defaults[f.attname] = lambda: None
                static[f.attname] = None
        self.immutable = model._meta.db_table == "audit_logs"  # append-only, hash-chained
        self._static = static
        self._builders = {}  # id(converters) -> {tuple of the attnames given: compiled builder}
        prep = {a: (None if getattr(self.prep[a], "identity", False) else self.prep[a]) for a in self.attnames}
        self.insert_tuple = self.tuple_builder(prep)

    def tuple_builder(self, converters: dict):
        """``build(values) -> tuple`` of every column in ``attnames`` order: the given values
        through ``converters[attname]`` (None: as they are), defaults for the others.

        Streamed collections repeat a handful of key shapes; a function compiled once per
        shape avoids a Python loop with branches over every column of every row."""
        builders = self._builders.setdefault(id(converters), {})

        def build(values):
            shape = tuple(values)
            compiled = builders.get(shape)
            if compiled is None:
                compiled = builders[shape] = self._compile(shape, converters)
            return compiled(values)

        build.converters = converters  # keeps id(converters) from being reused
        return build

    def sources(self, shape: tuple) -> list[tuple[str, str, object]]:
        """Where each column's value comes from, in ``attnames`` order, for rows with the keys
        ``shape``: ``(attname, "given", None)``, ``(attname, "static", the default)`` or
        ``(attname, "factory", the default's factory, called per row)``."""
        given = set(shape)
        out = []
        for attname in self.attnames:
            if attname in given:
                out.append((attname, "given", None))
            elif attname in self._static:
                out.append((attname, "static", self._static[attname]))
            else:
                out.append((attname, "factory", self.defaults[attname]))
        return out

    def _compile(self, shape: tuple, converters: dict):
        """``lambda v: (c0(v["a"]), d1, c2(d2()), ...)``: each given value converted, a static
        default converted once here, a default factory called per row. A converter with an
        ``inline`` expression (``legacy.migration.pipeline``) has it compiled in instead of
        the call, falling back to the call for what the expression leaves."""
        env, parts = {}, []
        for i, (attname, source, default) in enumerate(self.sources(shape)):
            convert = converters.get(attname)
            if source == "given":
                expr = f"v[{attname!r}]"
            elif source == "static":
                env[f"d{i}"] = convert(default) if convert is not None else default
                parts.append(f"d{i}")
                continue
            else:
                env[f"d{i}"] = default
                expr = f"d{i}()"
            if convert is not None:
                env[f"c{i}"] = convert
                inline = getattr(convert, "inline", None)  # (template, names): its common case
                if inline is None:
                    expr = f"c{i}({expr})"
                else:
                    env.update(inline[1])
                    expr = inline[0].format(value=expr, slow=f"c{i}")
            parts.append(expr)
        if not parts:
            return lambda v: ()
        return eval(f"lambda v: ({', '.join(parts)},)", env)  # noqa: S307 - names and reprs of our own fields


def _identity(value):
    return value


_identity.identity = True
_identity.param = native.PARAM_SAME


def _param(convert, kind: int):
    """``convert``, tagged with the kind of agentforge_core._native's ParamRow that does its
    common cases in C (legacy.migration.pipeline.RowEncoder, SQLite)."""
    convert.param = kind
    return convert


def _converter(field, vendor):
    internal = field.get_internal_type()
    target = field.target_field if field.is_relation else field
    target_type = target.get_internal_type()
    if internal == "GenericIPAddressField" and vendor != "postgresql" and not getattr(field, "encrypted", False):
        # Only IPv6 text is normalised by the field; an IPv4 string goes in as it is
        # (adapt_ipaddressfield_value is `value or None` outside PostgreSQL).
        def ip(value):
            if type(value) is str and ":" not in value:
                return value or None
            return field.get_db_prep_save(value, connection)

        return ip
    if getattr(field, "encrypted", False) or internal in ("BinaryField", "GenericIPAddressField", "DecimalField"):
        return lambda value: field.get_db_prep_save(value, connection)
    if internal == "JSONField":
        if vendor == "postgresql":
            from psycopg.types.json import Jsonb

            return lambda value: None if value is None else Jsonb(value)
        dumps = json_encoder()  # json.dumps's text, as Django's JSONField writes it

        def to_json(value):
            if value is None:
                return None
            if not value and isinstance(value, (list, dict)):
                return "[]" if isinstance(value, list) else "{}"
            return dumps(value)

        return _param(to_json, native.PARAM_JSON)
    if target_type == "UUIDField":
        if vendor == "postgresql":
            return _identity
        return _param(
            lambda value: (
                None if value is None else (value.hex if isinstance(value, uuid.UUID) else uuid.UUID(str(value)).hex)
            ),
            native.PARAM_UUID,
        )
    if internal == "DateTimeField":
        if vendor == "postgresql":
            return _identity
        if vendor in ("sqlite", "mysql"):
            # What Django's adapt_datetimefield_value does with USE_TZ (connection time zone UTC).
            def naive_utc(value):
                if value is None:
                    return None
                if value.tzinfo is UTC:  # what the legacy timestamps parse to: isoformat(" ") of the naive time
                    text = "%04d-%02d-%02d %02d:%02d:%02d.%06d" % _CLOCK(value)
                    return text if value.microsecond else text[:-7]  # no ".000000", as str() writes it
                if value.tzinfo is not None:
                    value = value.astimezone(UTC).replace(tzinfo=None)
                return str(value)

            return _param(naive_utc, native.PARAM_TIME)
        return lambda value: field.get_db_prep_save(value, connection)
    if internal == "BooleanField" and vendor != "postgresql":
        # 1 or 0, as stored: sqlite3 binds a bool only after failing to find it an adapter (an
        # AttributeError formatted per value), about a fifth of an audit entry's insert
        return _param(lambda value: None if value is None else int(bool(value)), native.PARAM_BOOL)
    return _identity


def _norm(value):
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


class CaseTwinError(Exception):
    """Two ids that differ only in case: one row on MariaDB/MySQL (case-insensitive
    collation), two elsewhere. Refused on every backend, so files import the same way."""

    def __init__(self, table: str, key, other):
        self.table, self.key, self.other = table, key, other
        super().__init__(f"{table}: id {key!r} differs from {other!r} only in case")


def _fold(key: tuple) -> tuple:
    return tuple(part.lower() if isinstance(part, str) else part for part in key)


def _refuse_case_twins(plan, unique: dict, existing: dict) -> None:
    """Raise CaseTwinError for a new key whose case-folded form is already taken, by a row
    of this batch or of the database (MariaDB's lookup finds those case-insensitively)."""
    taken = {_fold(key): key for key in existing}
    for key in unique:
        if key in existing:
            continue
        folded = _fold(key)
        other = taken.setdefault(folded, key)
        if other != key:
            raise CaseTwinError(plan.table, key[-1], other[-1])


class Writer:
    def __init__(self, *, dry_run=False, skip_existing=False, now=None, check=False):
        self.dry_run = dry_run
        self.skip_existing = skip_existing
        self.check = check
        self.now = now
        self.stats: dict[str, Stats] = defaultdict(Stats)
        self.differences: dict[str, list] = defaultdict(list)
        self._rows: dict[type, list[Row]] = defaultdict(list)
        self._children: dict[type, list[ChildSet]] = defaultdict(list)
        self._plans: dict[type, _ModelPlan] = {}
        self._skipped_parents: set = set()
        self.duplicates: list = []
        self.immutable_conflicts: list = []
        self.chain = None  # AuditChain: hashes of new audit entries, computed in insert order

    def plan(self, model) -> _ModelPlan:
        if model not in self._plans:
            self._plans[model] = _ModelPlan(model, self.now)
        return self._plans[model]

    # --- collecting ------------------------------------------------------------------------
    def add(self, mapped: Mapped) -> None:
        for row in mapped.rows:
            buffer = self._rows[row.model]
            buffer.append(row)
            if len(buffer) >= BATCH:
                self._flush_rows(row.model)
        for child in mapped.children:
            buffer = self._children[child.model]
            buffer.append(child)
            if len(buffer) >= BATCH:
                self.flush()

    def _announce(self, model, values: list[dict]) -> None:
        """Tell the cached reads which organizations' rows of ``model`` were written (raw
        SQL and COPY send no model signals)."""
        if self.dry_run or not values or not rows_changed.has_listeners(model):
            return
        field = scope_field(model)
        org_ids = None
        if field is not None:
            org_ids = {v.get(field.attname) for v in values}
            if None in org_ids:
                org_ids = None  # a row written without its organization: bump them all
        rows_changed.send(sender=model, org_ids=org_ids)

    def flush(self) -> None:
        for model in list(self._rows):
            self._flush_rows(model)
        for model in list(self._children):
            self._flush_children(model)
        self._skipped_parents.clear()

    # --- rows ------------------------------------------------------------------------------
    def _flush_rows(self, model) -> None:
        rows = self._rows.pop(model, None)
        if not rows:
            return
        self._announce(model, [row.values for row in rows])
        if connection.queries_logged:
            reset_queries()  # with DEBUG on, the query log would grow with the input
        plan = self.plan(model)
        stats = self.stats[plan.table]
        key_fields = rows[0].key_fields
        unique: dict[tuple, Row] = {}
        for row in rows:
            key = row.key
            earlier = unique.get(key)
            if earlier is not None:
                if row.merge is not None:
                    row = Row(model, {**earlier.values, **row.merge(earlier.values, row.values)}, key_fields, row.merge)
                else:
                    stats.warnings += 1
                    self.duplicates.append((plan.table, key))
            unique[key] = row
        existing = self._fetch_existing(plan, key_fields, list(unique), rows)
        _refuse_case_twins(plan, unique, existing)
        inserts, updates = [], defaultdict(list)
        for key, row in unique.items():
            current = existing.get(key)
            if current is None:
                if self.chain is not None and model is self.chain.model:
                    self.chain.assign(row.values)
                inserts.append(plan.insert_tuple(row.values))
                stats.created += 1
                continue
            if self.skip_existing or (plan.immutable and not row.values.get("_force")):
                if plan.immutable and not self.skip_existing:
                    differs = [k for k, v in row.values.items() if _norm(v) != _norm(current.get(k))]
                    if differs:
                        stats.warnings += 1
                        self.immutable_conflicts.append((plan.table, key[0], differs))
                        if self.check and len(self.differences[plan.table]) < 20:
                            self.differences[plan.table].append((key, sorted(differs)))
                    else:
                        stats.unchanged += 1
                    continue
                stats.skipped += 1
                self._skipped_parents.add(current.get("_pk"))
                continue
            target = row.merge(current, row.values) if row.merge else row.values
            diff = {k: v for k, v in target.items() if k not in key_fields and _norm(v) != _norm(current.get(k))}
            if not diff:
                stats.unchanged += 1
                continue
            stats.updated += 1
            if self.check and len(self.differences[plan.table]) < 20:
                self.differences[plan.table].append((key, sorted(diff)))
            columns = tuple(sorted(diff))
            updates[columns].append(
                tuple(plan.prep[c](diff[c]) for c in columns) + tuple(plan.prep[k](v) for k, v in zip(key_fields, key))
            )
        if self.dry_run:
            return
        if inserts:
            self._insert(plan, inserts)
        for columns, params in updates.items():
            qn = connection.ops.quote_name
            sets = ", ".join(f"{qn(plan.by_attname[c].column)} = %s" for c in columns)
            where = " AND ".join(f"{qn(plan.by_attname[k].column)} = %s" for k in key_fields)
            with connection.cursor() as cursor:
                cursor.executemany(f"UPDATE {qn(plan.table)} SET {sets} WHERE {where}", params)

    def _fetch_existing(self, plan, key_fields, keys, rows) -> dict:
        model = plan.model
        wanted = None  # the columns to compare, computed once something exists
        pk_name = model._meta.pk.attname
        first = key_fields[0]
        values = list({k[0] for k in keys})
        found = {}
        for start in range(0, len(values), 900):
            chunk = values[start : start + 900]
            # A cheap raw probe first: a fresh import finds nothing, and then the ORM query
            # (per-value field preparation, model conversions) is not needed.
            if not self.any_existing(plan, first, chunk):
                continue
            if wanted is None:
                wanted = set(key_fields)
                for row in rows:
                    wanted.update(row.values)
                wanted = [a for a in wanted if a in plan.by_attname]
            query = model._base_manager.filter(**{f"{first}__in": chunk}).values(*wanted, pk_name)
            for item in query:
                key = tuple(item[k] for k in key_fields)
                item["_pk"] = item[pk_name]
                found[key] = item
        return found

    @staticmethod
    def any_existing(plan, attname, values) -> bool:
        """Whether a row with one of ``values`` (at most ~900) in column ``attname`` exists."""
        qn = connection.ops.quote_name
        column, prep = qn(plan.by_attname[attname].column), plan.prep[attname]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":  # one array parameter, not 900
                condition, params = f"{column} = ANY(%s)", [[prep(v) for v in values]]
            else:
                condition, params = f"{column} IN ({', '.join(['%s'] * len(values))})", [prep(v) for v in values]
            cursor.execute(f"SELECT 1 FROM {qn(plan.table)} WHERE {condition} LIMIT 1", params)
            return cursor.fetchone() is not None

    def _insert(self, plan, tuples) -> None:
        qn = connection.ops.quote_name
        columns = ", ".join(qn(c) for c in plan.columns)
        # The driver's cursor is used below Django's wrapper: wrap_database_errors keeps its
        # errors Django's (an IntegrityError, not psycopg's UniqueViolation) for callers.
        with connection.cursor() as cursor, connection.wrap_database_errors:
            if connection.vendor == "postgresql":
                raw = cursor.cursor
                rls.apply(connection)  # COPY goes below Django's cursor and its RLS wrapper
                with raw.copy(f"COPY {qn(plan.table)} ({columns}) FROM STDIN") as copy:
                    for item in tuples:
                        copy.write_row(item)
            else:
                marks = ", ".join(["%s"] * len(plan.columns))
                cursor.executemany(f"INSERT INTO {qn(plan.table)} ({columns}) VALUES ({marks})", tuples)

    def insert_encoded(self, plan, payloads) -> None:
        """Insert rows encoded by ``legacy.migration.pipeline.RowEncoder``: COPY text lines (UTF-8)
        on PostgreSQL, ``(…)`` literals on MariaDB/MySQL, parameters on SQLite (packed into bytes by
        ``native.ParamRow`` and unpacked here, or tuples)."""
        if connection.vendor == "sqlite":
            self._insert(plan, payloads if native.unpack_rows is None else native.unpack_rows(payloads))
            return
        qn = connection.ops.quote_name
        columns = ", ".join(qn(c) for c in plan.columns)
        with connection.cursor() as cursor, connection.wrap_database_errors:
            raw = cursor.cursor  # below Django's debug wrapper: statements of megabytes are not logged
            if connection.vendor == "postgresql":
                rls.apply(connection)
                with raw.copy(f"COPY {qn(plan.table)} ({columns}) FROM STDIN") as copy:
                    # A few dozen KiB a write: one join of the whole batch (a MiB or more) was
                    # fresh pages from the kernel for every batch, page faults the CPU paid for.
                    for start in range(0, len(payloads), COPY_ROWS_PER_WRITE):
                        copy.write(b"".join(payloads[start : start + COPY_ROWS_PER_WRITE]))
                return
            prefix = f"INSERT INTO {qn(plan.table)} ({columns}) VALUES "
            limit = self._statement_chars()
            chunk, size = [], 0
            for payload in payloads:
                if chunk and size + len(payload) > limit:
                    raw.execute(prefix + ",".join(chunk))
                    chunk, size = [], 0
                chunk.append(payload)
                size += len(payload) + 1
            if chunk:
                raw.execute(prefix + ",".join(chunk))

    def _statement_chars(self) -> int:
        """Characters per multi-row INSERT: 4 MiB, within the server's max_allowed_packet
        even if every character takes four bytes."""
        if getattr(self, "_max_statement", None) is None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT @@max_allowed_packet")
                packet = int(cursor.fetchone()[0])
            self._max_statement = max(64 << 10, min(4 << 20, packet // 4 - 1024))
        return self._max_statement

    # --- child sets -------------------------------------------------------------------------
    def _flush_children(self, model) -> None:
        sets = self._children.pop(model, None)
        if not sets:
            return
        # A set emptied (a user's last role removed) has no row to name its organization.
        self._announce(model, [values for child in sets for values in (child.rows or [{}])])
        plan = self.plan(model)
        stats = self.stats[plan.table]
        parent_field = sets[0].parent_field
        compare = sets[0].compare
        by_parent = {}
        for child in sets:
            by_parent[child.parent_value] = child
        parents = [p for p in by_parent if not self._skipped(p)]
        for p in by_parent:
            if p not in parents:
                stats.skipped += len(by_parent[p].rows)
        current = defaultdict(list)
        for start in range(0, len(parents), 900):
            query = model._base_manager.filter(**{f"{parent_field}__in": parents[start : start + 900]}).values(
                parent_field, *compare
            )
            for item in query:
                current[item[parent_field]].append(tuple(_norm(item[c]) for c in compare))
        replace, inserts = [], []
        for parent in parents:
            child = by_parent[parent]
            wanted = sorted((tuple(_norm(r.get(c)) for c in compare) for r in child.rows), key=repr)
            have = sorted(current.get(parent, []), key=repr)
            if wanted == have:
                stats.unchanged += len(child.rows)
                continue
            if have:
                replace.append(parent)
                stats.updated += len(child.rows)
            else:
                stats.created += len(child.rows)
            inserts.extend(plan.insert_tuple(r) for r in child.rows)
        if self.dry_run:
            return
        qn = connection.ops.quote_name
        column = plan.by_attname[parent_field].column
        prep = plan.prep[parent_field]
        with connection.cursor() as cursor:
            for start in range(0, len(replace), 500):
                chunk = replace[start : start + 500]
                marks = ", ".join(["%s"] * len(chunk))
                cursor.execute(
                    f"DELETE FROM {qn(plan.table)} WHERE {qn(column)} IN ({marks})", [prep(p) for p in chunk]
                )
        if inserts:
            self._insert(plan, inserts)

    def _skipped(self, parent) -> bool:
        return parent in self._skipped_parents


class AuditChain:
    """Extends each organization's audit hash chain over the imported entries.

    New entries are inserted in file order, so their ids follow that order and the chain
    (ordered by id) can be computed before the insert; ``finish`` moves the chain heads.
    The hash is ``security.audit``'s, by its fast path for plain values (``EntryHasher``).
    """

    def __init__(self, writer: Writer):
        from security import audit
        from security.models import AuditLog

        self.audit = audit
        self.model = AuditLog
        self.plan = writer.plan(AuditLog)
        self.hasher = audit.EntryHasher()
        self.seal = self.hasher.seal
        self.hashed = frozenset(self.hasher.attnames)
        self.heads = {}
        self.last = {}

    def hash_parts(self, values: dict) -> tuple[bytes, bytes]:
        """The entry's canonical text around its ``prev_hash``; missing columns get their
        default here, once, so the row inserted is the row hashed."""
        if not values.keys() >= self.hashed:  # one set comparison in C for the usual full row
            defaults = self.plan.defaults
            for attname in self.hasher.attnames:
                if attname not in values:
                    values[attname] = defaults[attname]()
        return self.hasher.parts(values)

    def link(self, key: str, head: str, tail: str) -> tuple[str, str]:
        """Extend chain ``key`` by one entry: its (prev_hash, entry_hash)."""
        if key not in self.heads:
            locked = self.audit._lock_head(key, "default")
            self.heads[key] = locked
            self.last[key] = locked.last_hash
        prev = self.last[key]
        self.last[key] = entry_hash = self.seal(head, tail, prev)
        return prev, entry_hash

    def assign(self, values: dict) -> None:
        values["prev_hash"], values["entry_hash"] = self.link(
            self.audit.chain_key(values.get("org_id")), *self.hash_parts(values)
        )

    def finish(self) -> None:
        from django.db.models import Max
        from django.utils import timezone

        for key, head in self.heads.items():
            last_id = self.audit._chain_queryset(key).aggregate(m=Max("id"))["m"]
            if last_id is None:
                continue
            head.last_id, head.last_hash, head.updated_at = last_id, self.last[key], timezone.now()
            head.save(using="default")


def write_mapped(mapped_records, *, skip_existing=False) -> dict:
    """Write one or more :class:`Mapped` (e.g. from ``registry[c].to_rows(record)``) now.

    For single-record callers such as the dual-write store; returns stats per table.
    """
    from django.utils import timezone

    if isinstance(mapped_records, Mapped):
        mapped_records = [mapped_records]
    mapped_records = list(mapped_records)
    writer = Writer(skip_existing=skip_existing, now=timezone.now())
    # Mapped rows name their organizations: writing them is system work (and COPY needs the
    # database's bypass role under row-level security).
    with unscoped():
        if any(row.model._meta.db_table == "audit_logs" for mapped in mapped_records for row in mapped.rows):
            writer.chain = AuditChain(writer)  # an entry is hashed as it is written
        for mapped in mapped_records:
            writer.add(mapped)
        writer.flush()
        if writer.chain is not None:
            writer.chain.finish()
    return dict(writer.stats)
