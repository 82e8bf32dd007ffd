"""One canonical form of the audit hash: the importer's fast path equals compute_hash."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from django.db import models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from security import audit
from security.models import AuditLog
from tests.legacy_helpers import run_import, without_native

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)  # "" and non-ASCII included
OFFSETS = st.sampled_from(
    [None, dt.timezone.utc, dt.timezone(dt.timedelta(hours=2)), dt.timezone(dt.timedelta(hours=-5, minutes=-30))]
)
TIMES = st.builds(
    lambda moment, tz: moment if tz is None else moment.replace(tzinfo=tz),
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    OFFSETS,
)
ADDRESSES = st.one_of(st.ip_addresses().map(str), st.sampled_from(["::ffff:10.0.0.1", "2001:DB8::0:1", "fe80::1"]))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT | st.decimals(allow_nan=False) | st.uuids(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        # keys that are not strings come back from JSON as strings, and sort differently
        | st.dictionaries(TEXT | st.integers(-20, 20), inner, max_size=3)
    ),
    max_leaves=8,
)


def _strategy(f):
    if isinstance(f, models.DateTimeField):
        value = TIMES
    elif isinstance(f, models.JSONField):
        value = JSON
    elif isinstance(f, models.GenericIPAddressField):
        value = ADDRESSES
    elif isinstance(f, models.BooleanField):
        return st.booleans()
    elif f.name == "content_type":
        value = st.sampled_from([1, 2])
    elif f.is_relation:
        value = st.uuids()
    elif isinstance(f, models.IntegerField):
        value = st.integers(0, 3)
    else:
        value = TEXT
    return st.none() | value


HASHED = audit._hashed_fields()
ENTRIES = st.fixed_dictionaries({f.attname: _strategy(f) for f in HASHED})
PREV = st.sampled_from(["", "0" * 64, "é"])


def _hashers() -> dict:
    """The fast path in C (agentforge_core._native) and the pure-Python one it stands in for."""
    with without_native("CanonicalParts"):
        python = audit.EntryHasher()
    return {"native": audit.EntryHasher(), "python": python}


HASHERS = _hashers()


@pytest.mark.django_db
@pytest.mark.once  # hash functions in C and Python; the stored-entry test below runs on every backend
@pytest.mark.parametrize("kind", ["native", "python"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=ENTRIES, prev=PREV)
def test_fast_path_equals_compute_hash(kind, values, prev):
    expected = audit.compute_hash(AuditLog(**values), prev)
    assert HASHERS[kind].hash(dict(values), prev) == expected


def test_times_are_hashed_as_utc_text_with_microseconds():
    """The one canonical text of a time, which both hash paths use (stored hashes depend on it)."""
    field = AuditLog._meta.get_field("timestamp")
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert audit._canonical_value(field, dt.datetime(2026, 3, 1, 12, 30, 15, 123456, plus_two)) == (
        "2026-03-01T10:30:15.123456Z"
    )
    assert audit._canonical_value(field, dt.datetime(2026, 3, 1, 12, 30)) == "2026-03-01T12:30:00.000000Z"  # naive: UTC
    early = dt.datetime(999, 1, 2, 3, 4, 5, 6)
    assert audit._canonical_value(field, early) == early.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["native", "python"])
def test_a_value_holding_the_text_around_prev_hash_changes_nothing(kind):
    """The fast path splits the text where prev_hash's value goes by column order, not by
    searching the text: an entry whose values spell that place out hashes as compute_hash does."""
    hasher = HASHERS[kind]
    values = {f.attname: None for f in HASHED}
    spelled = '"prev_hash":"'
    for place in (
        {"object_repr": spelled},
        {"additional_data": {spelled: spelled, "prev_hash": "x"}},
        {"user_agent": spelled, "changes": [spelled, {"v": 2}]},
    ):
        entry = {**values, **place}
        head, tail = hasher.parts(dict(entry))
        assert head.endswith(b'"org_id":null,"prev_hash":') and tail.startswith(b',"remote_addr":')
        assert hasher.hash(dict(entry), "0" * 64) == audit.compute_hash(AuditLog(**entry), "0" * 64)


@pytest.mark.django_db
def test_fast_path_matches_a_stored_entry_with_an_offset_and_ipv6(make_org):
    """Written by the ORM, read back from the database: both routes give the stored hash."""
    org = make_org()
    entry = AuditLog.all_orgs.create(
        org_id=org.pk,
        action=1,
        legacy_action="update",
        object_repr="Zoë ✓",
        user_agent="",
        timestamp=dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        remote_addr="2001:DB8::1",
        additional_data={"é": [1, None, "x"]},
        actor_id=uuid.uuid4(),
    )
    stored = AuditLog.all_orgs.get(pk=entry.pk)
    values = {f.attname: getattr(stored, f.attname) for f in HASHED}
    for hasher in HASHERS.values():
        assert hasher.hash(dict(values), stored.prev_hash) == stored.entry_hash
    assert audit.compute_hash(stored, stored.prev_hash) == stored.entry_hash


@pytest.mark.django_db
def test_import_with_offset_timestamps_verifies(tmp_path):
    """The import's bulk path hashes +02:00 times as the verifier reads them back (UTC)."""
    (tmp_path / "security").mkdir()
    (tmp_path / "security" / "organizations.json").write_text(
        json.dumps({"org_x": {"id": "org_x", "name": "X", "slug": "x", "created_at": "2026-01-01T00:00:00"}})
    )
    entries = [
        {
            "id": str(uuid.UUID(int=n + 1)),
            "org_id": "org_x",
            "action": "login",
            "user_email": "zoë@example.com",
            "ip_address": "2001:db8::%d" % n,
            "details": {"n": n, "note": "ünïcode"},
            "success": True,
            "resource_name": "",
            "timestamp": f"2026-01-05T09:0{n}:54.614856+02:00",
        }
        for n in range(3)
    ]
    (tmp_path / "security" / "audit_logs.json").write_text(json.dumps(entries))
    run_import(tmp_path, verbosity=0)
    imported = AuditLog.all_orgs.filter(legacy_id__in=[e["id"] for e in entries]).order_by("id")
    assert [e.timestamp.utcoffset() for e in imported] == [dt.timedelta(0)] * 3
    assert imported[0].timestamp == dt.datetime(2026, 1, 5, 7, 0, 54, 614856, tzinfo=dt.timezone.utc)
    reports = audit.verify_all()
    assert reports and all(r.ok for r in reports), [r for r in reports if not r.ok]
