"""The mapper machinery: records in, rows out (and back), with typed validation."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

from django.utils import timezone

from agentforge_core import native
from agentforge_core.models import legacy_uuid
from legacy.format.collections import LegacyCollection, file_label
from legacy.format.errors import LegacyDataError, LegacyFieldError, describe
from legacy.format.jsonio import format_timestamp, parse_timestamp

MISSING_KEY = "__missing__"  # legacy_extra: keys absent in the source (older era); export omits them
_ABSENT = object()
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")


# --- rows ---------------------------------------------------------------------------------


@dataclass
class Row:
    """Values for one database row (attnames → Python values), found again by ``key``.

    Only the attnames given are compared and updated when the row already exists;
    missing ones get the field default on insert.
    """

    model: type
    values: dict
    key_fields: tuple = ("id",)
    # Called as merge(existing_values, new_values) -> values for an existing row.
    merge: Any = None

    @property
    def key(self) -> tuple:
        return tuple(self.values[f] for f in self.key_fields)


@dataclass
class ChildSet:
    """The complete set of child rows of one parent (replaced as a whole when it differs)."""

    model: type
    parent_field: str  # attname, e.g. "user_id"
    parent_value: Any
    rows: list = field(default_factory=list)  # dicts of attnames (parent_field included)
    compare: tuple = ()  # attnames that identify a child's content


@dataclass
class Mapped:
    legacy_id: str
    rows: list = field(default_factory=list)
    children: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # normalisations (stale tokens dropped, ...)


# --- a record's shape, for the plain paths ---------------------------------------------------


class _PythonRecordShape:
    """What ``native.RecordShape`` does, where it is not built: ``shape(record)`` is the
    record's values in the fields' order when it is a dict with exactly these keys, each value
    of its field's kind (``native.SHAPE_*``, with a length limit, 0 for none); else None."""

    def __init__(self, fields: tuple):
        self.fields = fields
        self.keys = frozenset(key for key, _kind, _limit in fields)

    def __call__(self, record):
        if type(record) is not dict or record.keys() != self.keys:
            return None
        values = []
        for key, kind, limit in self.fields:
            value = record[key]
            if kind == native.SHAPE_BOOL:
                fits = type(value) is bool
            elif kind == native.SHAPE_LIST:
                fits = type(value) is list
            elif kind == native.SHAPE_ANY:
                fits = True
            elif value is None:
                fits = kind == native.SHAPE_OPT_TEXT
            else:
                fits = (
                    type(value) is str
                    and (not limit or len(value) <= limit)
                    and (kind != native.SHAPE_ID or value != "")
                )
            if not fits:
                return None
            values.append(value)
        return tuple(values)


def record_shape(fields: tuple):
    """A check of a record's keys and value types that hands back its values, for a mapper's
    plain path: one C call per record when agentforge_core._native is built."""
    assert len({key for key, _kind, _limit in fields}) == len(fields), "each key once"
    return (native.RecordShape or _PythonRecordShape)(tuple(fields))


# --- context --------------------------------------------------------------------------------


class Context:
    """What a mapper needs to know beyond one record: which referenced ids exist, the
    default organization, the clock, and data of other files (group membership from users).

    ``source_ids`` holds legacy ids seen in the files being imported; anything else is
    looked up in the database once and cached, so a single record can be mapped too.
    """

    def __init__(self, now: dt.datetime | None = None):
        self.now = now or timezone.now()
        self.source_ids: dict[type, set] = {}
        self._db_cache: dict[tuple, Any] = {}
        self._db_empty: dict[type, bool] = {}
        self.raw: dict[str, Any] = {}  # collection -> loaded data (small files only)
        self.permission_ids: dict[str, int] = {}
        self.dry_run = False
        self._pk_to_legacy: dict[type, dict] = {}
        self._ref_cache: dict = {}
        # Models whose imported rows in the database are exactly source_ids (legacy.migration.pipeline):
        # an id outside source_ids is then known to dangle without asking the database.
        self.db_matches_source: set = set()
        # Organization of rows mapped in this run (documents, tools), for the rows that
        # belong to them but carry no org_id of their own (chunks_index entries).
        self._row_orgs: dict[tuple, Any] = {}
        # Organization slugs given out in this run (case-folded -> legacy id): the column is unique.
        self.org_slugs: dict[str, str] = {}

    # import direction
    def add_source_ids(self, model, ids: Iterable[str]) -> None:
        self.source_ids.setdefault(model, set()).update(ids)

    def exists(self, model, legacy_id) -> bool:
        if legacy_id is None:
            return False
        if legacy_id in self.source_ids.get(model, ()):
            return True
        return self.db_pk(model, legacy_id) is not None

    def db_pk(self, model, legacy_id):
        if model in self.db_matches_source:
            return None
        cache_key = (model, legacy_id)
        if cache_key in self._db_cache:
            return self._db_cache[cache_key]
        if self._db_empty.get(model) is None:
            self._db_empty[model] = not model._base_manager.exists()
        pk = None
        if not self._db_empty[model]:
            pk = model._base_manager.filter(legacy_id=legacy_id).values_list("pk", flat=True).first()
        if len(self._db_cache) > 200_000:
            self._db_cache.clear()
        self._db_cache[cache_key] = pk
        return pk

    def ref(self, model, legacy_id):
        """The primary key a legacy reference points to, or None when it dangles."""
        if legacy_id is None or not isinstance(legacy_id, str):
            return None
        cache_key = (model, legacy_id)
        pk = self._ref_cache.get(cache_key)
        if pk is not None:
            return pk
        if legacy_id in self.source_ids.get(model, ()):
            pk = legacy_uuid(model._meta.db_table, legacy_id)
            if len(self._ref_cache) > 100_000:
                self._ref_cache.clear()
            self._ref_cache[cache_key] = pk
            return pk
        return self.db_pk(model, legacy_id)

    def default_org_id(self):
        """The pk of ``org_default``, which owns every record without an org_id."""
        from accounts.models import Organization

        pk = self.ref(Organization, "org_default")
        if pk is None:
            raise LegacyFieldError(
                "org_id",
                "none given, and the default organization 'org_default' is neither "
                "in security/organizations.json nor in the database",
            )
        return pk

    def note_org(self, model, pk, org_id) -> None:
        self._row_orgs[(model, pk)] = org_id

    def org_of(self, model, pk):
        """The organization of row ``pk`` of ``model``: mapped in this run, else from the database."""
        if pk is None:
            return None
        key = (model, pk)
        if key not in self._row_orgs:
            self._row_orgs[key] = model._base_manager.filter(pk=pk).values_list("org_id", flat=True).first()
        return self._row_orgs[key]

    def permission_id(self, codename: str):
        return self.permission_ids.get(codename)

    # export direction
    def legacy_id_of(self, model, pk) -> str | None:
        if pk is None:
            return None
        table = self._pk_to_legacy.setdefault(model, {})
        if pk not in table:
            if len(table) > 200_000:
                table.clear()
            legacy = model._base_manager.filter(pk=pk).values_list("legacy_id", flat=True).first()
            table[pk] = legacy if legacy is not None else str(pk)
        return table[pk]

    def preload(self, model) -> None:
        table = self._pk_to_legacy.setdefault(model, {})
        for pk, legacy in model._base_manager.values_list("pk", "legacy_id").iterator(chunk_size=5000):
            table[pk] = legacy if legacy is not None else str(pk)


# --- record reader with validation ------------------------------------------------------------


class Rec:
    """Typed, lenient access to one legacy record; remembers which keys were used."""

    def __init__(self, data: dict, where: str = ""):
        self.data = data
        self.where = where  # prefix for nested objects, e.g. "profile."
        self.used: set[str] = set()
        self.missing: list[str] = []

    def _get(self, key, default):
        self.used.add(key)
        if key not in self.data:
            if default is _ABSENT:
                raise LegacyFieldError(self.where + key, "missing")
            self.missing.append(key)
            return _ABSENT
        return self.data[key]

    def fail(self, key, message):
        raise LegacyFieldError(self.where + key, message)

    def has(self, key) -> bool:
        return key in self.data

    def raw(self, key, default=None):
        value = self._get(key, default)
        return default if value is _ABSENT else value

    def str(self, key, default=_ABSENT, null=False, max_length=None):
        value = self._get(key, default)
        if value is _ABSENT:
            return default
        if value is None and null:
            return None
        if not isinstance(value, str):
            self.fail(key, f"expected a string{' or null' if null else ''}, got {describe(value)}")
        if max_length and len(value) > max_length:
            self.fail(key, f"longer than {max_length} characters ({len(value)})")
        return value

    def bool(self, key, default=_ABSENT, null=False):
        value = self._get(key, default)
        if value is _ABSENT:
            return default
        if value is None and null:
            return None
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {describe(value)}")
        return value

    def int(self, key, default=_ABSENT, null=False, minimum=None, maximum=None):
        value = self._get(key, default)
        if value is _ABSENT:
            return default
        if value is None and null:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {describe(value)}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.fail(key, f"{value} is out of range")
        if not -(2**63) <= value < 2**63:
            self.fail(key, f"{value} is out of range")
        return value

    def list(self, key, default=_ABSENT, null=False, of=None):
        value = self._get(key, default)
        if value is _ABSENT:
            return list(default) if isinstance(default, list) else default
        if value is None and null:
            return None
        if not isinstance(value, list):
            self.fail(key, f"expected a list, got {describe(value)}")
        if of is str:
            for item in value:
                if not isinstance(item, str):
                    self.fail(key, f"expected a list of strings, got an item {describe(item)}")
        return value

    def dict(self, key, default=_ABSENT, null=False):
        value = self._get(key, default)
        if value is _ABSENT:
            return dict(default) if isinstance(default, dict) else default
        if value is None and null:
            return None
        if not isinstance(value, dict):
            self.fail(key, f"expected an object, got {describe(value)}")
        return value

    def json(self, key, default=_ABSENT):
        value = self._get(key, default)
        return default if value is _ABSENT else value

    def ts(self, key, default=_ABSENT, null=False):
        """A timestamp; ``default=None`` with ``null=False`` means "leave to the model"."""
        value = self._get(key, default)
        if value is _ABSENT:
            return default
        if value is None and null:
            return None
        if not isinstance(value, str):
            self.fail(key, f"expected a timestamp string, got {describe(value)}")
        try:
            return parse_timestamp(value)
        except ValueError:
            self.fail(key, f"not an ISO timestamp: {describe(value)}")

    def enum(self, key, choices, default=_ABSENT, null=False):
        value = self.str(key, default, null=null)
        if value is None or value is default and key not in self.data:
            return value
        allowed = choices if isinstance(choices, tuple) else [c[0] if isinstance(c, tuple) else c for c in choices]
        if value not in allowed:
            self.fail(key, f"unknown value {describe(value)} (expected one of {', '.join(allowed)})")
        return value

    def ip(self, key):
        value = self.str(key, None, null=True)
        if value is None:
            return None, None
        if IPV4.fullmatch(value):
            return value, None  # already canonical
        try:
            return str(ipaddress.ip_address(value)), None
        except ValueError:
            return None, value

    def extra(self) -> dict:
        return {k: v for k, v in self.data.items() if k not in self.used}


def legacy_extra(rec: Rec, **more) -> dict:
    extra = rec.extra()
    if rec.missing:
        extra[MISSING_KEY] = list(rec.missing)
    for key, value in more.items():
        if value is not None:
            extra[key] = value
    return extra


def omit_missing(out: dict, extra: dict, defaults: dict | None = None) -> dict:
    """Drop keys that were absent in the source, as long as they still hold the default."""
    missing = (extra or {}).get(MISSING_KEY) or []
    for key in missing:
        if key in out and (defaults is None or key not in defaults or out[key] == defaults[key]):
            del out[key]
    return out


def extra_items(extra: dict) -> dict:
    """legacy_extra without our bookkeeping keys (those start with "__" or "_af_")."""
    return {k: v for k, v in (extra or {}).items() if not k.startswith("__") and not k.startswith("_af_")}


def ts_out(value):
    return format_timestamp(value)


def choices_of(enum_cls):
    return [value for value, _ in enum_cls.choices]


# --- mapper base -------------------------------------------------------------------------------


class Mapper:
    """One legacy collection ↔ one (main) model and its satellites.

    Built by ``legacy.format.mappers`` from the collection's entry in
    ``legacy.format.collections.LEGACY_COLLECTIONS``, which gives its name (``collection``), its
    ``container`` ("dict", "list" or "object") and whether it is streamed (``stream``).
    Subclasses set ``model`` and implement :meth:`map_record` (legacy dict →
    :class:`Mapped`) and :meth:`to_legacy` (model instance → legacy dict).
    """

    model = None
    # Streamed and big: read and mapped in a second process on a fresh import (legacy.migration.pipeline).
    pipeline = False
    # Entity names for the summary table: (label, model) of every table this mapper fills.
    satellites: tuple = ()

    def __init__(self, collection: LegacyCollection):
        self.collection = collection.name
        self.container = collection.container
        self.stream = collection.streamed

    @property
    def file(self) -> str:
        return file_label(self.collection)

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    def pk(self, legacy_id) -> uuid.UUID:
        return legacy_uuid(self.table, legacy_id)

    def record_id(self, outer_key, record):
        if (
            isinstance(record, dict)
            and isinstance(record.get("id"), (str, int))
            and not isinstance(record.get("id"), bool)
        ):
            return record["id"]
        return outer_key

    def to_rows(self, record, ctx: Context | None = None, outer_key=None) -> Mapped:
        """Map one legacy record; raise LegacyDataError naming file, record and field."""
        ctx = ctx or Context()
        if not isinstance(record, dict):
            raise LegacyDataError(
                self.file, f"expected an object, got {describe(record)}", self.record_id(outer_key, record)
            )
        try:
            mapped = self.map_record(record, ctx)
        except LegacyFieldError as exc:  # the record's id, as it was given (mappers do not change it)
            raise LegacyDataError(self.file, exc.message, self.record_id(outer_key, record), exc.field) from None
        if outer_key is not None and str(outer_key) != str(mapped.legacy_id):
            mapped.warnings.append(
                f"{self.file}: record {mapped.legacy_id}: outer key {outer_key!r} differs from the id; using the id"
            )
        return mapped

    def begin(self, record: dict) -> tuple[Rec, str, Mapped, str]:
        """The common start of ``map_record``: the record's validator, its legacy id (checked),
        the empty result and the ``"<file>: record <id>"`` prefix of warnings."""
        rec = Rec(record)
        lid = self.record_legacy_id(rec)
        return rec, lid, Mapped(lid), f"{self.file}: record {lid}"

    def record_legacy_id(self, rec: Rec) -> str:
        value = rec.data.get("id")
        rec.used.add("id")
        if not isinstance(value, str) or not value:
            rec.fail("id", f"expected a non-empty string, got {describe(value)}")
        if len(value) > 128:
            rec.fail("id", "longer than 128 characters")
        return value

    def map_record(self, record: dict, ctx: Context) -> Mapped:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_legacy(self, instance, ctx: Context | None = None) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def export_queryset(self):
        return self.model._base_manager.order_by("created_at", "legacy_id")

    def store_queryset(self):
        """What the store's ``all()`` reads: the export's rows, with what ``to_legacy`` needs
        that ``export_json`` reads in batches of its own."""
        return self.export_queryset()

    def export_key(self, instance, record) -> str:
        return record.get("id", str(instance.pk))

    def source_ids(self, data) -> list:
        """Legacy ids found in a loaded (small) file, for reference checks."""
        if isinstance(data, dict):
            return [str(v.get("id", k)) if isinstance(v, dict) else str(k) for k, v in data.items()]
        return []
