"""legacy.format.jsonio's record reader: what it decodes equals json.loads, wherever the file's
blocks happen to cut the text (inside a literal, a number, an escape, a string)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from legacy.format import jsonio

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
