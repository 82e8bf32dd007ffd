"""The import's encoders take shortcuts for speed; each must give exactly what the plain way
gives, for any value: a legacy timestamp's parse, the COPY/VALUES fast paths compiled into the
row builder, the JSON texts, and the audit hash's remembered UUID texts."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentforge_core import native
from agentforge_core.jsontext import json_encoder
from conversations.models import Conversation, Message
from legacy.format.jsonio import parse_timestamp
from legacy.migration import pipeline
from legacy.migration.writer import _converter, _ModelPlan
from security import audit
from security.models import AuditLog
from tests.legacy_helpers import without_native
from tests.test_security_audit_hash import HASHERS

pytestmark = pytest.mark.once  # pure encoders: the same on every backend

UTC = dt.timezone.utc
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def _replaced(text: str) -> dt.datetime:
    """What parse_timestamp did before its shortcut: a naive time is UTC."""
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@settings(max_examples=1000, deadline=None)
@given(
    moment=st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    timespec=st.sampled_from(["auto", "hours", "minutes", "seconds", "milliseconds", "microseconds"]),
    sep=st.sampled_from(["T", " "]),
    offset=st.sampled_from([None, UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))]),
)
def test_a_naive_timestamp_parses_as_utc_as_replace_does(moment, timespec, sep, offset):
    text = moment.replace(tzinfo=offset).isoformat(sep=sep, timespec=timespec)
    parsed, expected = parse_timestamp(text), _replaced(text)
    assert parsed == expected and parsed.isoformat() == expected.isoformat()
    assert parsed.tzinfo == expected.tzinfo and (parsed.tzinfo is UTC) == (expected.tzinfo is UTC)


@pytest.mark.parametrize(
    "text",
    # forms where appending "+00:00" is no offset: a date alone, ISO weeks, basic format
    ["2026-01-05", "2026-W01-1", "2026-W01", "20260105", "20260105T090154", "2026-01-05T09", "2026-01-05T09:01:54,5"],
)
def test_timestamps_without_room_for_an_offset_still_parse_as_utc(text):
    parsed = parse_timestamp(text)
    assert parsed == _replaced(text) and parsed.tzinfo is UTC


def _plain_builder(plan, converters: dict):
    """The same converters, called one by one: the row builder without its compiled fast paths."""
    return plan.tuple_builder({a: (lambda v, c=c: c(v)) for a, c in converters.items()})


def _value_strategy(field):
    kind = type(field.target_field if field.is_relation else field).__name__
    special = st.sampled_from(["", "tab\there", "new\nline", "back\\slash", "cr\r", "quote'\"", "\x1a", "é ✓"])
    if kind == "UUIDField":
        value = st.uuids() | st.uuids().map(str)
    elif kind == "DateTimeField":
        value = st.datetimes(timezones=st.sampled_from([UTC, dt.timezone(dt.timedelta(hours=-3))])) | st.datetimes()
    elif kind == "JSONField":
        value = JSON
    elif kind == "BooleanField":
        value = st.booleans()
    elif "Integer" in kind or "AutoField" in kind:
        value = st.integers(0, 2**31 - 1)
    elif kind == "GenericIPAddressField":
        value = st.sampled_from(["10.0.0.1", "", "::1", "2001:DB8::1", "::ffff:10.0.0.1"])
    else:
        value = TEXT | special
    return st.none() | value


def _rows(model):
    fields = [f for f in model._meta.concrete_fields if f.attname not in ("prev_hash", "entry_hash")]
    return st.fixed_dictionaries({f.attname: _value_strategy(f) for f in fields})


@pytest.mark.django_db
@pytest.mark.parametrize("vendor", ["postgresql", "mysql"])
@pytest.mark.parametrize("model", [AuditLog, Message, Conversation])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_compiled_fast_paths_encode_as_the_encoders_do(model, vendor, data):
    plan = _ModelPlan(model, dt.datetime(2026, 1, 1, tzinfo=UTC))
    converters = {a: pipeline._column_encoder(plan.by_attname[a], plan.prep[a], vendor) for a in plan.attnames}
    assert any(hasattr(c, "inline") for c in converters.values())  # the fast paths are there to compare
    values = data.draw(_rows(model))
    try:
        expected = _plain_builder(plan, converters)(dict(values))
    except Exception as exc:  # a value the encoder refuses: the fast path refuses it the same way
        with pytest.raises(type(exc)):
            plan.tuple_builder(converters)(dict(values))
        return
    assert plan.tuple_builder(converters)(dict(values)) == expected


def _plan(model) -> _ModelPlan:
    """The model's plan, its per-row default factories (uuid4 for keys) made to repeat one value."""
    plan = _ModelPlan(model, dt.datetime(2026, 1, 1, tzinfo=UTC))
    for attname, source, factory in plan.sources(()):
        if source == "factory":
            plan.defaults[attname] = lambda value=factory(): value
    return plan


def _encoders(model, chained: bool, vendor: str = "postgresql") -> dict:
    """Row encoders of one plan, with the COPY lines (PostgreSQL) or parameters (SQLite) built in
    C (agentforge_core._native) and in Python; ``chained``: an audit entry's row stops before the
    chain's two columns."""
    plan = _plan(model)
    chain = SimpleNamespace(model=model, hasher=SimpleNamespace(parts=None)) if chained else None
    with without_native("CopyRow" if vendor == "postgresql" else "ParamRow"):
        python = pipeline.RowEncoder(plan, vendor, chain)
    return {"native": pipeline.RowEncoder(plan, vendor, chain), "python": python}


def _unpacked(encoder):
    """``encoder.payload``, SQLite's parameters packed by native.ParamRow unpacked as the writer
    unpacks them (the pipe carries bytes; the database gets the tuple)."""

    def payload(values):
        row = encoder.payload(values)
        return native.unpack_rows([row])[0] if encoder.vendor == "sqlite" else row

    return payload


def _skip_unless_sqlite(vendor: str) -> None:
    """SQLite's parameters come from its own converters: they are the plan's on SQLite only."""
    from django.db import connection

    if vendor == "sqlite" and connection.vendor != "sqlite":
        pytest.skip("SQLite's parameters: run on SQLite")


# non-plain JSON too: what the C writer leaves to the standard library's encoder (or its refusal)
ODD_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT | st.uuids() | st.just(-0.0) | st.just(1e16),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(TEXT | st.integers(-5, 5) | st.booleans(), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.mark.django_db
@pytest.mark.parametrize("vendor", ["postgresql", "sqlite"])
@pytest.mark.parametrize(
    "model, chained", [(AuditLog, True), (AuditLog, False), (Message, False), (Conversation, False)]
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_native_rows_are_the_python_ones(model, chained, vendor, data):
    """Any values, any missing columns (their defaults: static, or a factory called per row)."""
    _skip_unless_sqlite(vendor)
    values = data.draw(_rows(model))
    for attname in data.draw(st.sets(st.sampled_from(sorted(values)), max_size=4)):
        del values[attname]
    json_columns = [f.attname for f in model._meta.concrete_fields if type(f).__name__ == "JSONField"]
    for attname in data.draw(st.sets(st.sampled_from(json_columns), max_size=2)):
        values[attname] = data.draw(ODD_JSON)
    encoders = _encoders(model, chained, vendor)
    expected = _outcome(encoders["python"].payload, values)
    assert _outcome(_unpacked(encoders["native"]), values) == expected  # the same row, or refused the same way
    if type(expected) is bytes:
        assert expected.endswith(b"\n") is not chained


@pytest.mark.django_db
@pytest.mark.parametrize("vendor", ["postgresql", "sqlite"])
@pytest.mark.parametrize("model", [AuditLog, Message])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_encoder_writes_rows_of_changing_keys_as_python_does(model, vendor, data):
    """The C line kept for the last rows' keys must not take a row of other keys: as many keys
    but another set, a key that is no column, one column fewer or more."""
    _skip_unless_sqlite(vendor)
    encoders = _encoders(model, model is AuditLog, vendor)
    columns = sorted(data.draw(_rows(model)))
    for _ in range(data.draw(st.integers(2, 6))):
        values = data.draw(_rows(model))
        for attname in data.draw(st.sets(st.sampled_from(columns), max_size=2)):
            del values[attname]
        if data.draw(st.booleans()):
            values["not_a_column"] = "x"
        assert _outcome(_unpacked(encoders["native"]), values) == _outcome(encoders["python"].payload, values)


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1.5, -0.0, 1e16, 1e-07, 2**70, -(2**63)], "é": 'x\u0000\x1f\\"\t\n'},
        [float("nan"), {"x": float("inf")}],
        [float("nan"), uuid.UUID(int=1)],  # not plain, after a float that is not finite
        {1: "int key"},
        ("a", "tuple"),
        "\ud83d\ude00 😀",
        ["\x7f é \u2028 \U0001f600 \ud800", {"é": "\x00\x1f"}],
        [[[[[]]]], {}, {"": {}}],
    ],
)
def test_the_native_json_texts_are_json_dumps(value):
    """The C writers (a jsonb column's COPY text, a SQLite JSON parameter, the hash's sorted
    text) against the standard library."""
    from django.db import connection

    for vendor in ["postgresql", "sqlite"] if connection.vendor == "sqlite" else ["postgresql"]:
        encoders = _encoders(Message, False, vendor)
        row = {"tool_calls": value, "legacy_extra": None}
        assert _outcome(_unpacked(encoders["native"]), row) == _outcome(encoders["python"].payload, row)
    entry = {f.attname: None for f in audit._hashed_fields()} | {"additional_data": value}
    assert _outcome(HASHERS["native"].parts, entry) == _outcome(HASHERS["python"].parts, entry)


def _outcome(function, values: dict):
    """What ``function(values)`` gives, or the type of what it raises (a lone surrogate has no
    UTF-8; a UUID is no JSON)."""
    try:
        result = function(dict(values))
    except Exception as exc:
        return type(exc)
    # parameters: each with its type (False == 0, but a boolean column is no integer one)
    return tuple((type(x), x) for x in result) if type(result) is tuple else result


OPTIONS = [{}, {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False}, {"separators": (",", ":")}]


@settings(max_examples=500, deadline=None)
@given(value=JSON | st.dictionaries(TEXT, JSON, max_size=4), options=st.sampled_from(OPTIONS))
def test_json_encoder_writes_what_json_dumps_writes(value, options):
    assert json_encoder(**options)(value) == json.dumps(value, **options)


def test_the_import_json_texts_are_json_dumps_with_their_options():
    value = {"b": [1.5, None, "é"], "a": {"z": True}}
    assert audit._json_sorted(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert pipeline._json_text(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    with pytest.raises(TypeError):  # what json.dumps refuses, refused the same way
        json_encoder()({"when": dt.date(2026, 1, 1)})


@pytest.mark.django_db
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moment=st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)))
def test_sqlite_and_mariadb_times_are_django_s_text(moment):
    """The writer's DateTimeField parameter for SQLite and MariaDB: the naive UTC time as
    ``str()`` gives it (what Django binds), microseconds only when there are some."""
    field = AuditLog._meta.get_field("timestamp")
    for vendor in ("sqlite", "mysql"):
        assert _converter(field, vendor)(moment.replace(tzinfo=UTC)) == str(moment)


@pytest.mark.django_db
def test_remembered_uuid_texts_follow_the_objects(monkeypatch):
    """The hash's UUID texts are remembered by object identity: repeated objects, new objects,
    and a full memory (emptied) all hash as compute_hash does."""
    monkeypatch.setattr(audit._QuotedUUIDs, "LIMIT", 3)
    hasher = audit.EntryHasher()
    base = {f.attname: None for f in audit._hashed_fields()}
    same = uuid.uuid4()
    for n in range(12):
        actor = same if n % 2 else uuid.UUID(int=n + 1)  # a new object each time, ids may be reused
        values = {**base, "actor_id": actor, "org_id": same, "timestamp": dt.datetime(2026, 1, 1, tzinfo=UTC)}
        assert hasher.hash(dict(values), "p") == audit.compute_hash(AuditLog(**values), "p")
        del actor, values


def _python_parse(text):
    with without_native("utc_timestamp"):
        return _outcome(lambda values: parse_timestamp(values["t"]), {"t": text})


@settings(max_examples=1000, deadline=None)
@given(
    parts=st.tuples(
        st.integers(1, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61)
    ),
    micro=st.none() | st.integers(0, 999_999),
    sep=st.sampled_from(["T", " ", "t", "\ud800", "é"]),
    suffix=st.sampled_from(["", "+00:00", "Z", "+01:00", "-00:00", "+00:00:00"]),
)
def test_agentforge_s_timestamps_parse_in_c_as_in_python(parts, micro, sep, suffix):
    """The C parser takes AgentForge's form and hands back anything else, invalid dates included."""
    year, month, day, hour, second = parts
    text = f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:30:{second:02d}"
    text += ("" if micro is None else f".{micro:06d}") + suffix
    got, expected = _outcome(lambda values: parse_timestamp(values["t"]), {"t": text}), _python_parse(text)
    assert got == expected
    if isinstance(expected, dt.datetime):
        assert (got.tzinfo is UTC) == (expected.tzinfo is UTC) and got.isoformat() == expected.isoformat()
    if sep in "T " and suffix in ("", "+00:00") and isinstance(expected, dt.datetime):
        assert native.utc_timestamp(text) is not None  # the form the import meets is the C one


HEXISH = st.text(alphabet="0123456789abcdefABCDEF-_{}+: urnid\ud800é", min_size=30, max_size=40)


@settings(max_examples=1000, deadline=None)
@given(text=st.uuids().map(str) | st.uuids().map(lambda u: u.hex.upper()) | HEXISH)
def test_legacy_ids_parse_in_c_as_uuid_does(text):
    fast = native.uuid_from_text(text)
    try:
        expected = uuid.UUID(text)
    except ValueError:
        assert fast is None
        return
    if len(text) == 32 and all(c in "0123456789abcdefABCDEF" for c in text):
        assert fast is not None
    if fast is not None:
        assert type(fast) is uuid.UUID and fast == expected and fast.int == expected.int
        assert fast.is_safe is expected.is_safe and str(fast) == str(expected) and hash(fast) == hash(expected)


HASH_TEXTS = st.sampled_from(["", "0" * 64, "ab" * 32, 'a"b', "back\\slash", "tab\there", "é", "\x00"]) | st.none()


def _pack(row: tuple):
    """SQLite parameters as native.ParamRow(packed=True) sends them: bytes, or the tuple itself
    when a value does not pack."""
    columns = [(f"c{i}", native.PARAM_SAME, None, None) for i in range(len(row))]
    return native.ParamRow(columns, packed=True)({f"c{i}": value for i, value in enumerate(row)})


PARAMETERS = st.lists(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=3)
    | st.binary(max_size=3)
    | st.sampled_from(["\ud800", 2**70, 1.5, "é😀"]),
    max_size=5,
).map(tuple)
PAYLOADS = {
    "postgresql": st.binary(max_size=20),  # a COPY line's start
    "sqlite": PARAMETERS | PARAMETERS.map(_pack),  # parameters, packed or not
}


def _typed(row) -> tuple:
    return tuple((type(x), repr(x)) for x in row)


@settings(max_examples=300, deadline=None)
@given(row=PARAMETERS)
def test_packed_parameters_unpack_to_the_same_values(row):
    """What crosses the pipe for SQLite: packed bytes unpack to the same values of the same types;
    a value that does not pack (a lone surrogate, an integer beyond 64 bits) leaves the tuple as it is."""
    packed = _pack(row)
    assert _typed(native.unpack_rows([packed])[0]) == _typed(row)
    assert (type(packed) is tuple) is not all(_packs(x) for x in row)


def _packs(value) -> bool:
    if type(value) is int:
        return -(2**63) <= value < 2**63
    if type(value) is str:  # a lone surrogate has no UTF-8
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
    return True


@pytest.mark.django_db
@pytest.mark.parametrize("vendor", ["postgresql", "sqlite"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), heads=st.dictionaries(st.sampled_from(["k1", "k2", "k3"]), HASH_TEXTS))
def test_the_native_chain_links_are_the_python_ones(vendor, data, heads):
    """Audit entries linked to their chains in C (native.seal_rows) against Python's link() and
    seal(): the same rows (COPY lines, SQLite parameters) and last hashes, whatever the chains'
    last hashes (None, empty, text COPY or JSON must escape) and with chains new to the import."""
    from django.utils import timezone

    from legacy.migration.writer import AuditChain, Writer

    keys, parts = st.sampled_from(["k1", "k2", "k3"]), st.binary(max_size=30)
    items = data.draw(st.lists(st.tuples(PAYLOADS[vendor], keys, parts, parts), max_size=12))

    def sealed(native_on: bool):
        writer = Writer(dry_run=True, now=timezone.now())
        chain = AuditChain(writer)
        # a chain in ``heads`` was opened already; any other is locked on first use (here: no database)
        chain.heads, chain.last = dict.fromkeys(heads), dict(heads)
        chain.audit = SimpleNamespace(_lock_head=lambda key, using: SimpleNamespace(last_hash=f"head of {key}"))
        encoder = pipeline.RowEncoder(writer.plan(AuditLog), vendor, chain)
        with contextlib.nullcontext() if native_on else without_native("seal_rows"):
            rows = _outcome(lambda _values: tuple(encoder.seal_all(list(items))), {})
            if vendor == "sqlite" and type(rows) is tuple:  # as the writer unpacks them
                rows = tuple(_typed(row) for row in native.unpack_rows([row for _type, row in rows]))
            return rows, chain.last

    assert sealed(True) == sealed(False)
