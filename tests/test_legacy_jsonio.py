"""legacy.format.jsonio's record reader: what it decodes equals json.loads, wherever the file's
blocks happen to cut the text (inside a literal, a number, an escape, a string)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from legacy.format import jsonio
from legacy.format.errors import LegacyDataError
from tests.legacy_helpers import without_native

pytestmark = pytest.mark.once  # reads files, no database

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)
RECORDS = st.lists(st.dictionaries(TEXT, VALUES, max_size=4), max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=RECORDS,
    chunk=st.integers(1, 40),
    indent=st.sampled_from([None, 2]),
    ascii=st.booleans(),
    container=st.sampled_from(["list", "dict"]),
)
def test_records_read_in_any_block_size_equal_json_loads(
    tmp_path_factory, monkeypatch, records, chunk, indent, ascii, container
):
    monkeypatch.setattr(jsonio, "STREAM_CHUNK", chunk)
    data = records if container == "list" else {f"k{i}": record for i, record in enumerate(records)}
    path = tmp_path_factory.mktemp("j") / "file.json"
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=ascii), encoding="utf-8")
    got = list(jsonio.read_records(path, "file.json", container, stream=True))
    if container == "list":
        assert [record for _key, record in got] == records and all(key is None for key, _r in got)
    else:
        assert dict(got) == data and len(got) == len(data)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 13])
def test_a_big_file_with_every_literal_at_every_cut(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(jsonio, "STREAM_CHUNK", chunk)
    records = [
        {
            "id": f"r{i}",
            "t": True,
            "f": False,
            "n": None,
            "i": -1234567 * i,
            "x": 1.5e-7 * i,
            "s": 'é\u2028"\\/\t😀' * (i % 3),
            "l": [[], {}, [None]],
        }
        for i in range(40)
    ]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(records, indent=2, ensure_ascii=True), encoding="utf-8")
    assert [r for _k, r in jsonio.read_records(path, "big.json", "list", stream=True)] == records


def _read(path, container: str, hooks: bool):
    """Every record of ``path``, or the one-line error; ``hooks``: the reader's Python hooks
    decide duplicate keys and long numbers (what it does without agentforge_core._native)."""
    with without_native("json_text_facts") if hooks else contextlib.nullcontext():
        try:
            return list(jsonio.iter_container(path, "x.json", container))
        except LegacyDataError as exc:
            return str(exc)


# keys that spell JSON's own punctuation, so a reader counting ':' in the text must skip strings
AWKWARD_KEYS = st.sampled_from(["a", "a:b", '"', '\\":', "\\", "é:", "x"])
FLAT = st.none() | st.booleans() | st.integers() | AWKWARD_KEYS | st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pairs=st.lists(
        st.lists(st.tuples(AWKWARD_KEYS, FLAT | st.lists(FLAT, max_size=2)), max_size=4), min_size=1, max_size=4
    ),
    nest=st.booleans(),
    container=st.sampled_from(["list", "dict"]),
)
def test_without_the_hooks_the_reader_finds_what_they_find(tmp_path_factory, pairs, nest, container):
    """Duplicate keys (written as text, at any depth), keys holding ':' and quotes, integers of
    any length: the C facts and the Python hooks give the same records or the same error."""
    records = []
    for n, members in enumerate(pairs):  # each object's text as written, duplicates and all
        body = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in members) + "}"
        records.append('{"id": "r%d", "inner": [%s]}' % (n, body) if nest else body)
    if container == "list":
        text = "[" + ",\n".join(records) + "]"
    else:
        text = "{" + ",\n".join(f'"k{n}": {record}' for n, record in enumerate(records)) + "}"
    path = tmp_path_factory.mktemp("facts") / "x.json"
    path.write_text(text)
    assert _read(path, container, hooks=False) == _read(path, container, hooks=True)


@pytest.mark.parametrize(
    "number, refused",
    [
        ("9223372036854775807", False),
        ("-9223372036854775808", False),
        ("9223372036854775808", True),
        ("-9223372036854775809", True),
        ("-123456789012345678", False),  # 18 digits and a sign: checked, in range
        ("1234567890123456789.5", False),  # a float: checked, nothing to refuse
    ],
)
def test_long_integers_are_range_checked_without_the_hooks(tmp_path, number, refused):
    path = tmp_path / "x.json"
    path.write_text('[{"id": "a", "n": [%s]}]' % number)
    got = _read(path, "list", hooks=False)
    assert got == _read(path, "list", hooks=True)
    assert ("out of the 64-bit range" in got) if refused else (got == [(None, json.loads(path.read_text())[0])])


# Items of a list file as text, each a reason for the reader to leave its C batch
# (native.scan_objects) or none: the batch must stop before it and the reader take it its own way.
ITEM_TEXTS = st.sampled_from(
    [
        '{"id": "a", "n": 1}',
        '{"id": "b", "s": "x\\u00e9\\ud83d\\ude00"}',  # a surrogate pair: checked, taken
        '{"id": "c", "s": "\\u0000"}',  # NUL: refused
        '{"id": "d", "s": "\\ud800"}',  # a lone surrogate: refused
        '{"id": "e", "s": "\\\\u0000"}',  # an escaped backslash, then text: taken
        '{"id": "f", "n": 12345678901234567890}',  # out of range: refused
        '{"id": "g", "a": 1, "a": 2}',  # a duplicate key: refused
        '{"id": "h", "deep": ' + "[" * 70 + "]" * 70 + "}",  # too deep: refused
        '{"id": "i", "s": "' + "[" * 70 + '"}',  # brackets in a string: checked, taken
        '{"id": "j", "x": NaN}',
        '{"id": "k", "f": 1e999}',
        "[1, 2]",  # not an object: refused
        '"text"',
        "{}",
        '{"id": "l" "m": 1}',  # malformed
        '\n  {\t"id" :\r\n"n" }',
    ]
)


@pytest.mark.parametrize("decoder", ["orjson", "scan_once"])
@pytest.mark.parametrize("container", ["list", "dict"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.lists(ITEM_TEXTS, max_size=8),
    separators=st.lists(st.sampled_from([",", ", ", "\n,\n", ",,", " "]), min_size=8, max_size=8),
    keys=st.lists(st.sampled_from(['"k"', '"k\\u00e9"', '"a:b"', '"k\\"', "k", '""']), min_size=8, max_size=8),
    end=st.sampled_from(["]", "\n]\n", "", ",]", "] x", "}", "\n}"]),
    chunk=st.sampled_from([7, 64, 1024 * 1024]),
    batch=st.sampled_from([1, 3, 256]),
)
def test_the_c_batch_reads_what_the_reader_reads(
    tmp_path_factory, monkeypatch, decoder, container, items, separators, keys, end, chunk, batch
):
    """Any mix of plain and refused items (keyed or not, any keys), any separators, cut
    anywhere, any batch size, either decoder: the same records, or the same error, as without
    agentforge_core._native."""
    monkeypatch.setattr(jsonio, "STREAM_CHUNK", chunk)
    monkeypatch.setattr(jsonio, "BATCH_RECORDS", batch)
    if decoder == "scan_once":
        monkeypatch.setattr(jsonio, "orjson", None)
    else:
        assert jsonio.orjson is not None, "orjson is not installed (requirements.txt)"
    if container == "dict":  # each key made unique (a repeat is the writer's to find), unless it is not a string
        items = [
            (keys[i][:-1] + f'{i}"' if keys[i].endswith('"') else keys[i]) + ": " + item for i, item in enumerate(items)
        ]
    opening = "[" if container == "list" else "{"
    text = opening + "".join(item + (separators[i] if i < len(items) - 1 else "") for i, item in enumerate(items)) + end
    path = tmp_path_factory.mktemp("batch") / "x.json"
    path.write_text(text, encoding="utf-8")
    assert _read(path, container, hooks=False) == _read(path, container, hooks=True)


@pytest.mark.parametrize("decoder", ["orjson", "scan_once"])
def test_the_c_batch_takes_plain_objects_and_stops_before_the_first_other(decoder):
    """What native.scan_objects hands on: each plain object up to the one the reader must see,
    decoded by orjson or by the standard library's scanner."""
    from agentforge_core import native

    assert native.scan_objects is not None, "agentforge_core._native is not built: run scripts/build-native"
    assert jsonio.orjson is not None, "orjson is not installed (requirements.txt)"
    scan, loads = json.JSONDecoder().scan_once, (jsonio.orjson.loads if decoder == "orjson" else None)

    def batch(text, pos=1, max_depth=64, max_text=1000, limit=100, keyed=False):
        return native.scan_objects(scan, loads, text, pos, max_depth, max_text, limit, keyed)

    # "\\u0000" is text, but the reader's own test (jsonio._ESCAPES) looks at it: so does the batch
    text = '[{"a": 1}, {"b": "\\\\u0000"} ,{"c": "\\u00e9"}, {"d": 2}]'
    records, pos, done = batch(text)
    assert records == [{"a": 1}] and text[pos:].lstrip().startswith('{"b"') and not done
    records, pos, done = batch(text, text.index('{"c"'))
    assert records == [{"c": "é"}, {"d": 2}] and pos == len(text) and done
    assert batch(text, limit=1)[0] == [{"a": 1}]  # at most ``limit``
    assert batch('[{"a": 1}')[0] == []  # no delimiter yet: cut
    assert batch('[{"a": "x]}')[0] == []  # the text ends in a string
    assert batch('[{"a": 1, "a": 2}]')[0] == []
    assert batch('[{"a": [[[]]]}]', max_depth=3)[0] == []  # 4 brackets, at most 3
    assert batch('[{"a": "xxxxxx"}]', max_text=10)[0] == []  # 15 characters, at most 10
    assert batch('[{"a": 1e400}]')[0] == ([] if decoder == "orjson" else [{"a": float("inf")}])
    assert batch('[{"a": 1}, 5]') == ([{"a": 1}], 10, False)  # not an object: the reader's
    keyed_text = '{"k1": {"a": "}"}, "k\\u00e9": {"b": 2}}'
    assert batch(keyed_text, keyed=True) == ([("k1", {"a": "}"})], 18, False)  # a key with an escape: the reader's
    assert batch('{"k": {"a": 1}}', keyed=True) == ([("k", {"a": 1})], 15, True)
