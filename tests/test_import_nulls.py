"""``null`` wherever AgentForge's Pydantic models allow it: imported, and written back as null.

AgentForge's writer (``.dict()``) emits ``null`` for every ``Optional[...]`` field and every
field defaulting to ``None``; ``nullable_fields()`` (tests/agentforge_real.py, from its models' shapes)
is that list.
"""

from __future__ import annotations

import pytest

from agentforge_agents.models import ToolPermission
from tests import legacy_corpus as C
from tests.agentforge_real import nullable_fields
from tests.legacy_helpers import load_dir, run_export, run_import

pytestmark = pytest.mark.django_db

NULLABLE = nullable_fields()
SETTINGS_NULLABLE = sorted(NULLABLE.pop("security/settings.json#settings"))


def _set(record: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        record = record.setdefault(name, {})
    record[leaf] = value


def _get(record: dict, dotted: str):
    for name in dotted.split("."):
        record = record[name]
    return record


def _records(data):
    return data if isinstance(data, list) else list(data.values())


def _null_corpus(root):
    """The generated corpus with every Optional field of every record set to null."""
    files, facts = C.build_corpus()
    for relative, fields in NULLABLE.items():
        for record in _records(files[relative]):
            for dotted in fields:
                _set(record, dotted, None)
    for settings in files["security/settings.json"]["settings"].values():
        for name in SETTINGS_NULLABLE:
            settings[name] = None
    for relative, data in files.items():
        C.dump(root / relative, data, relative)
    return files


def test_every_optional_field_null_at_once_imports_and_exports_as_null(tmp_path):
    files = _null_corpus(tmp_path / "in")
    run_import(tmp_path / "in", verbosity=0)
    # the case seen on every real installation that created a tool permission
    assert ToolPermission.all_orgs.get(legacy_id="tp_aaaaaaaaaaaa").tool_name is None

    run_export(tmp_path / "out")
    exported = load_dir(tmp_path / "out")
    checked = 0
    for relative, fields in NULLABLE.items():
        out = exported[relative]
        by_id = {r["id"]: r for r in _records(out)}
        for record in _records(files[relative]):
            for dotted in fields:
                assert _get(by_id[record["id"]], dotted) is None, f"{relative}: record {record['id']}: {dotted}"
                checked += 1
    for org, settings in exported["security/settings.json"]["settings"].items():
        for name in SETTINGS_NULLABLE:
            assert settings[name] is None, f"security/settings.json: {org}: {name}"
            checked += 1
    assert checked == sum(len(f) * len(_records(files[r])) for r, f in NULLABLE.items()) + 2 * len(SETTINGS_NULLABLE)


def test_a_null_file_imports_twice_without_change(tmp_path):
    from tests.legacy_helpers import rerun_changes_nothing

    _null_corpus(tmp_path / "in")
    run_import(tmp_path / "in", verbosity=0)
    rerun_changes_nothing(tmp_path / "in")
