"""import_json against hostile data directories: each file is refused with one line naming the
file and record, the process stays small, and nothing is written."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.legacy_helpers import dump, run_import
from tests.test_import_corpus import _corrupt, _fails, corpus  # noqa: F401  (corpus is a fixture)

pytestmark = pytest.mark.django_db

LAB = "lab/99999999-0000-4000-8000-00000000000a.json"


def _copy(tmp_path, corpus):  # noqa: F811
    target = tmp_path / "data"
    shutil.copytree(corpus[0], target)
    return target


def test_a_symlink_out_of_the_data_directory_is_refused(tmp_path, corpus):  # noqa: F811
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps({"id": "x", "name": "secret from elsewhere"}))
    target = _copy(tmp_path, corpus)
    (target / LAB).unlink()
    (target / LAB).symlink_to(outside)
    message = _fails(target, f"{LAB}: links outside the data directory (to {outside}); refused")
    assert message == (
        f"{LAB}: links outside the data directory (to {outside}); refused"
        " (nothing was imported: the transaction was rolled back)"
    )
    # A small file, and a streamed one.
    for relative in ("security/users.json", "security/audit_logs.json"):
        target = _copy(tmp_path / relative.replace("/", "_"), corpus)
        moved = tmp_path / relative.replace("/", "_") / "moved.json"
        (target / relative).rename(moved)
        (target / relative).symlink_to(moved)
        _fails(target, f"{relative}: links outside the data directory")


def test_a_symlink_inside_the_data_directory_is_followed(tmp_path, corpus):  # noqa: F811
    target = _copy(tmp_path, corpus)
    (target / "lab-files").mkdir()
    (target / LAB).rename(target / "lab-files" / "a.json")
    (target / LAB).symlink_to(target / "lab-files" / "a.json")
    before = dump()
    run_import(target, verbosity=0)
    assert dump() != before


AUDIT = "security/audit_logs.json"
LAST = "ffffffff-0000-4000-8000-000000000005"  # the last audit entry of the corpus
USERS = "security/users.json"


def _inject(tmp_path, corpus, relative, field, fragment, record=-1):  # noqa: F811
    """``relative`` with ``field`` of one record replaced by the raw JSON text ``fragment``."""
    root, _ = corpus
    data = json.loads((root / relative).read_text(encoding="utf-8"))
    target_record = data[record] if isinstance(data, list) else data[record]
    target_record[field] = "__INJECTED__"
    return _corrupt(tmp_path, corpus, relative, text=json.dumps(data, indent=2).replace('"__INJECTED__"', fragment, 1))


@pytest.mark.parametrize(
    "fragment, expected",
    [
        (
            '"Mozilla \\ud800"',
            f"{AUDIT}: record {LAST}: user_agent: lone surrogate (\\ud800-\\udfff) in text: not a character",
        ),
        ('"a\\u0000b"', f"{AUDIT}: record {LAST}: user_agent: NUL character (\\u0000) in text"),
        ("NaN", f"{AUDIT}: record {LAST}: NaN is not a JSON number"),
        ("-Infinity", f"{AUDIT}: record {LAST}: -Infinity is not a JSON number"),
        ("1e999", f"{AUDIT}: record {LAST}: user_agent: expected a string or null, got inf"),
        ("1" + "0" * 5000, f"{AUDIT}: record {LAST}: a number too large (out of the 64-bit range)"),
        (str(2**64), f"{AUDIT}: record {LAST}: user_agent: integer of 20 digits: out of the 64-bit range"),
        ('{"a": [' * 70 + "1" + "]}" * 70, f"{AUDIT}: record {LAST}: user_agent" + ".a[0]" * 31),
    ],
    ids=["lone-surrogate", "nul", "nan", "infinity", "overflowing-float", "5000-digits", "2**64", "too-deep"],
)
def test_odd_values_are_one_line_errors_naming_file_record_and_field(tmp_path, corpus, fragment, expected):  # noqa: F811
    target = _inject(tmp_path, corpus, AUDIT, "user_agent", fragment)
    message = _fails(target, expected)
    assert message.splitlines()[0].startswith(expected)


def test_odd_values_in_a_small_file_name_the_record_too(tmp_path, corpus):  # noqa: F811
    target = _inject(tmp_path, corpus, USERS, "first_name", '"x\\u0000"', record="22222222-2222-4222-8222-222222222222")
    _fails(target, f"{USERS}: record 22222222-2222-4222-8222-222222222222: first_name: NUL character")


def test_a_duplicate_key_is_an_error_naming_the_key(tmp_path, corpus):  # noqa: F811
    root, _ = corpus
    text = (root / AUDIT).read_text(encoding="utf-8")
    tail = text.rindex('"user_email"')
    evil = text[:tail] + '"user_email": "evil@example.com", ' + text[tail:]
    _fails(_corrupt(tmp_path, corpus, AUDIT, text=evil), f"{AUDIT}: record {LAST}: duplicate key 'user_email'")
    # A user's email replaced by a second "email" key, in a small file.
    text = (root / USERS).read_text(encoding="utf-8")
    at = text.index('"email"')
    evil = text[:at] + '"email": "attacker@example.com", ' + text[at:]
    _fails(_corrupt(tmp_path / "u", corpus, USERS, text=evil), "duplicate key 'email'")
    # Two records under the same id in a dict file.
    data = json.loads(text)
    first = next(iter(data))
    evil = text.rstrip()[:-1] + f', "{first}": {json.dumps(data[first])}' + "}"
    _fails(_corrupt(tmp_path / "d", corpus, USERS, text=evil), f"{USERS}: record {first}: duplicate key '{first}'")


def test_an_audit_entry_that_is_not_an_object_is_named_by_position(tmp_path, corpus):  # noqa: F811
    _fails(
        _corrupt(tmp_path, corpus, AUDIT, lambda d: d.insert(2, 5)), f"{AUDIT}: record #3: expected an object, got 5"
    )
    _fails(
        _corrupt(tmp_path / "n", corpus, AUDIT, lambda d: d.append(None)),
        f"{AUDIT}: record #7: expected an object, got null",
    )


def test_ids_that_differ_only_in_case_are_refused_on_every_backend(tmp_path, corpus):  # noqa: F811
    def add_upper(entries):
        entries.append(dict(entries[0], id=entries[0]["id"].upper(), action="logout"))

    first = "ffffffff-0000-4000-8000-000000000000"
    _fails(
        _corrupt(tmp_path, corpus, AUDIT, add_upper),
        f"{AUDIT}: record {first.upper()}: the id differs from {first!r} only in case",
    )


DEEP = 200_000


def test_a_list_nested_200000_deep_is_refused_in_little_memory(tmp_path):
    """The 400 KB file of the issue, read under a 200 MiB address-space limit."""
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "conversations.json"
    path.write_text('{"c1": {"id": "c1", "messages": ' + "[" * DEEP + "]" * DEEP + "}}")
    assert 390_000 < path.stat().st_size < 410_000
    script = (
        "import resource, sys\n"
        "limit = 200 * 1024 * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
        "import django; django.setup()\n"
        "from pathlib import Path\n"
        "from legacy.format.errors import LegacyDataError\n"
        "from legacy.format.jsonio import read_records\n"
        "for stream in (True, False):\n"
        "    try:\n"
        "        list(read_records(Path(sys.argv[1]), 'conversations.json', 'dict', stream=stream))\n"
        "    except LegacyDataError as exc:\n"
        "        print(exc)\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec(), so it would start at the
        # peak of the pytest process that forked this one.
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "print(int(status['VmHWM'].split()[0]) // 1024)\n"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, second, peak = done.stdout.splitlines()
    assert first == second == "conversations.json: record c1: nested deeper than 64 levels"
    assert int(peak) < 200


def test_the_deep_file_fails_the_import_with_one_line(tmp_path, corpus):  # noqa: F811
    deep = '{"c1": {"id": "c1", "messages": ' + "[" * DEEP + "]" * DEEP + "}}"
    _fails(
        _corrupt(tmp_path, corpus, "conversations.json", text=deep),
        "conversations.json: record c1: nested deeper than 64 levels",
    )
