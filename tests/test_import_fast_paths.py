"""The importer's hot paths are shortcuts, not second implementations: for any record they take,
they give exactly what the generic mapper gives (rows, warnings, notes); any other record is
left to the generic mapper."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Organization, User
from agentforge_core import native
from legacy.format.mappers import registry
from legacy.format.mappers.base import Context, record_shape
from legacy.format.mappers.security import AUDIT_ACTIONS, AuditLogMapper
from tests.legacy_helpers import without_native

AUDIT = registry["security/audit_logs"]
USERS = ["u-1", "00000000-0000-4000-8000-000000000001"]
ORGS = ["org_default", "org_2"]


def _context() -> Context:
    ctx = Context()
    ctx.add_source_ids(Organization, ORGS)
    ctx.add_source_ids(User, USERS)
    ctx.db_matches_source = {Organization, User}  # every other id dangles, no database asked
    return ctx


def _generic(record, ctx):
    plain = AuditLogMapper._map_plain
    AuditLogMapper._map_plain = lambda self, record, ctx: None
    try:
        return AUDIT.map_record(record, ctx)
    finally:
        AuditLogMapper._map_plain = plain


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
OPTIONAL_TEXT = st.none() | st.just("") | TEXT
# An entry as AgentForge writes it, within every limit: the fast path must take each one.
AUDIT_ENTRIES = st.fixed_dictionaries(
    {
        "id": TEXT.filter(bool),
        "org_id": st.sampled_from([None, *ORGS]),
        "user_id": st.sampled_from([None, "", *USERS]),
        "user_email": OPTIONAL_TEXT,
        "user_name": st.just("") | TEXT,
        "session_id": OPTIONAL_TEXT,
        "action": st.sampled_from(sorted(AUDIT_ACTIONS)),
        "resource_type": st.sampled_from(["user", "agent", "settings", "kb", "", "tool"]),
        "resource_id": OPTIONAL_TEXT,
        "resource_name": OPTIONAL_TEXT,
        "details": st.sampled_from([{}, {"n": 1}, {"nested": {"a": [1, "x", None]}}]),
        "changes": st.sampled_from([None, {"before": 1, "after": 2}]),
        "ip_address": st.sampled_from([None, "", "10.0.0.1", "192.168.1.255"]),
        "user_agent": OPTIONAL_TEXT,
        "request_id": OPTIONAL_TEXT,
        "request_path": OPTIONAL_TEXT,
        "request_method": st.sampled_from([None, "", "GET", "DELETE"]),
        "success": st.booleans(),
        "error_message": OPTIONAL_TEXT,
        "timestamp": st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)).map(
            lambda moment: moment.isoformat()
        )
        | st.just("2026-01-10T12:00:00+02:00"),
    }
)
# Values the fast path may leave to the generic mapper (which maps, warns about or refuses them).
UNUSUAL = {
    "id": ["", "x" * 129, 5],
    "org_id": ["", "org_gone", 3],
    "user_id": ["u-gone", 3],
    "user_email": [5, "e" * 255],
    "user_name": [None, "n" * 256],
    "action": ["rename", "", None],
    "resource_type": [None, "r" * 41],
    "details": [None, [], "x"],
    "ip_address": ["010.0.0.1", "::1", "2001:DB8::1", "bad", 7],
    "request_method": ["PROPFIND-LONG", 5],
    "success": [None, 1, "yes"],
    "timestamp": ["not a time", "", "2026-01-10", 5],
    "extra_key": ["kept"],
}
CHANGES = (
    st.none()
    | st.sampled_from([(key, value) for key, values in UNUSUAL.items() for value in values])
    | (st.sampled_from(["details", "org_id", "ip_address", "user_agent"]).map(lambda key: (key, "<dropped>")))
)


@pytest.mark.django_db
@pytest.mark.once  # mapping only: no database is asked
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=AUDIT_ENTRIES, change=CHANGES)
def test_the_audit_fast_path_maps_as_the_generic_mapper(record, change):
    if change is not None:
        key, value = change
        if value == "<dropped>":
            del record[key]
        else:
            record[key] = value
    fast = AUDIT._map_plain(dict(record), _context())
    if fast is None:
        assert change is not None, "an entry as AgentForge writes it missed the fast path"
        return  # left to the generic mapper
    generic = _generic(dict(record), _context())
    assert [(row.model, row.values, row.key_fields) for row in fast.rows] == [
        (row.model, row.values, row.key_fields) for row in generic.rows
    ]
    assert (fast.legacy_id, fast.warnings, fast.notes, fast.children) == (
        generic.legacy_id,
        generic.warnings,
        generic.notes,
        generic.children,
    )


@pytest.mark.django_db
@pytest.mark.once
def test_the_audit_fast_path_takes_what_agentforge_writes():
    """The two shapes AgentForge writes (its JSON service, and its database converter on a
    restart with the database up) take the fast path; the property test above holds them equal."""
    written = {
        "id": "e-1",
        "org_id": "org_default",
        "user_id": "u-1",
        "user_email": "a@example.com",
        "user_name": "A",
        "session_id": None,
        "action": "login",
        "resource_type": "user",
        "resource_id": "u-1",
        "resource_name": None,
        "details": {"remember_me": False},
        "changes": None,
        "ip_address": "10.0.0.1",
        "user_agent": "Mozilla/5.0",
        "request_id": None,
        "request_path": None,
        "request_method": None,
        "success": True,
        "error_message": None,
        "timestamp": "2026-01-10T12:00:00.123456",
    }
    from_database = {**written, "user_id": "", "user_email": "", "user_name": "", "ip_address": ""}
    for record in (written, from_database):
        assert AUDIT._map_plain(dict(record), _context()) is not None, record


# --- chat messages -----------------------------------------------------------------------------

CONVERSATIONS = registry["conversations"]
MESSAGES = st.fixed_dictionaries(
    {
        "id": TEXT.filter(bool),
        "role": st.sampled_from(["user", "assistant", "system", "tool"]),
        "content": st.just("") | TEXT,
        "tool_calls": st.sampled_from([[], [{"name": "search", "arguments": {"q": "x"}}]]),
        "sources": st.sampled_from([[], [{"title": "Doc", "score": 0.5}]]),
        "timestamp": st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)).map(
            lambda moment: moment.isoformat()
        ),
    }
)
UNUSUAL_MESSAGE = {
    "id": ["", "m" * 129, None, 5],
    "role": ["robot", "", None],
    "content": [None, 5],
    "tool_calls": [None, {}, "x"],
    "sources": [None, {}],
    "timestamp": ["not a time", "", 5],
}
MESSAGE_CHANGES = st.none() | st.sampled_from(
    [(key, value) for key, values in UNUSUAL_MESSAGE.items() for value in values]
    + [(key, "<dropped>") for key in UNUSUAL_MESSAGE]
    + [("extra_key", "kept")]
)


def _conversation(messages):
    return {
        "id": "c-1",
        "org_id": "org_default",
        "agent_id": None,
        "user_id": "u-1",
        "title": "Chat",
        "messages": messages,
        "created_at": "2026-01-10T12:00:00",
        "updated_at": "2026-01-10T12:00:00",
    }


def _rows(mapped):
    return [(row.model, row.values, row.key_fields) for row in mapped.rows]


@pytest.mark.django_db
@pytest.mark.once
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=MESSAGES, change=MESSAGE_CHANGES)
def test_the_message_fast_path_maps_as_the_generic_loop(message, change, monkeypatch):
    from legacy.format.mappers import conversations

    if change is not None:
        key, value = change
        if value == "<dropped>":
            del message[key]
        else:
            message[key] = value
    plain = conversations._plain_message(dict(message), "org", "conversation", 0)
    if plain is None:
        assert change is not None, "a message as AgentForge writes it missed the fast path"
        return
    fast = CONVERSATIONS.map_record(_conversation([dict(message)]), _context())
    with monkeypatch.context() as patch:
        patch.setattr(conversations, "_plain_message", lambda *args: None)
        generic = CONVERSATIONS.map_record(_conversation([dict(message)]), _context())
    assert _rows(fast) == _rows(generic)
    assert (fast.warnings, fast.notes) == (generic.warnings, generic.notes)


SHAPE_KINDS = st.sampled_from(
    [native.SHAPE_ANY, native.SHAPE_TEXT, native.SHAPE_ID, native.SHAPE_OPT_TEXT, native.SHAPE_BOOL, native.SHAPE_LIST]
)
# every kind of value at each length limit's edges (0 - 3 characters; 4 is over every limit)
SHAPE_VALUES = st.sampled_from([None, True, False, 0, 1, 1.0, "", "x", "xyz", "wxyz", [], [None], {}, {"k": None}])


@pytest.mark.once
@settings(max_examples=500, deadline=None)
@given(data=st.data(), fields=st.dictionaries(st.sampled_from("abc"), st.tuples(SHAPE_KINDS, st.integers(0, 3))))
def test_a_record_shape_in_c_takes_what_the_python_one_takes(data, fields):
    """native.RecordShape against its pure-Python twin: the same values, or both None."""
    spec = tuple((key, kind, limit) for key, (kind, limit) in fields.items())
    with without_native("RecordShape"):
        python = record_shape(spec)
    assert type(python) is not native.RecordShape
    # mostly records with the shape's keys (each value of any kind), else anything
    record = data.draw(
        st.fixed_dictionaries({key: SHAPE_VALUES for key in fields})
        | st.dictionaries(st.sampled_from("abcd"), SHAPE_VALUES, max_size=4)
        | SHAPE_VALUES
    )
    got = record_shape(spec)(record)
    assert got == python(record)
    if got is not None:  # and it is what it claims: the same keys, the values in order
        assert type(record) is dict and set(record) == set(fields) and got == tuple(record[k] for k in fields)


@pytest.mark.once
def test_a_record_shape_refuses_a_key_twice_and_a_subclass():
    with pytest.raises(AssertionError):
        record_shape((("a", native.SHAPE_ANY, 0), ("a", native.SHAPE_ANY, 0)))
    with pytest.raises(ValueError):
        native.RecordShape((("a", native.SHAPE_ANY, 0), ("a", native.SHAPE_TEXT, 0)))
    with pytest.raises(ValueError):
        native.RecordShape((("a", 99, 0),))

    class Record(dict):
        pass

    shape = record_shape((("a", native.SHAPE_TEXT, 2),))
    assert shape({"a": "xy"}) == ("xy",)
    assert shape(Record(a="xy")) is None  # only what the JSON decoder makes: a dict
    assert shape({"a": "xyz"}) is None and shape({"a": None}) is None and shape({"a": "x", "b": 1}) is None
