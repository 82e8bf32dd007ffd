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
    assert message.splitlines()[0] == f"{LAB}: links outside the data directory (to {outside}); refused"
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
