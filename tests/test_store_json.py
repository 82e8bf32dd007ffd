"""STORAGE_MODE=json: the legacy files only, atomic, locked, in the legacy formatting."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from legacy.store import JsonStore, UnknownCollection, get_store, jsonfiles

pytestmark = pytest.mark.once  # the JSON store alone, no database

PROJECT_SAMPLE = Path(__file__).resolve().parent.parent / "sample-data"
SAMPLE = PROJECT_SAMPLE
PROJECT = Path(__file__).resolve().parent.parent


def agent(agent_id: str, name: str = "Helper", **more) -> dict:
    record = {
        "id": agent_id,
        "name": name,
        "icon": "\U0001f916",
        "goal": "Help — politely",
        "tool_ids": [],
        "status": "draft",
        "is_active": True,
        "created_at": "2026-01-20T10:00:00.123456",
        "updated_at": "2026-01-20T10:00:00.123456",
    }
    record.update(more)
    return record


@pytest.fixture
def sample_dir(tmp_path):
    if not SAMPLE.is_dir():
        pytest.skip("legacy sample not available")
    target = tmp_path / "data"
    shutil.copytree(SAMPLE, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    target.chmod(0o755)
    return target


def test_get_store_json_mode(settings, tmp_path):
    settings.STORAGE_MODE = "json"
    settings.LEGACY_DATA_DIR = str(tmp_path)
    store = get_store()
    assert isinstance(store, JsonStore)
    assert store.data_dir == tmp_path


def test_save_get_all_delete_agent(tmp_path):
    store = JsonStore(tmp_path)
    assert store.get("agents", "a1") is None
    assert store.all("agents") == []
    store.save("agents", agent("a1"))
    store.save("agents", agent("a2", "Second"))
    store.save("agents", agent("a1", "Renamed"))
    assert store.get("agents", "a1")["name"] == "Renamed"
    assert [a["id"] for a in store.all("agents")] == ["a1", "a2"]
    assert store.delete("agents", "a1") is True
    assert store.delete("agents", "a1") is False
    assert [a["id"] for a in store.all("agents")] == ["a2"]
    on_disk = json.loads((tmp_path / "agents.json").read_text())
    assert list(on_disk) == ["a2"] and on_disk["a2"]["id"] == "a2"


def test_app_file_formatting_is_legacy(tmp_path):
    """App files: indent 2, ensure_ascii (emoji as surrogate escapes), no trailing newline."""
    JsonStore(tmp_path).save("agents", agent("a1"))
    text = (tmp_path / "agents.json").read_text(encoding="utf-8")
    assert text.startswith('{\n  "a1": {\n    "id": "a1",')
    assert '"icon": "\\ud83e\\udd16"' in text
    assert '"goal": "Help \\u2014 politely"' in text
    assert not text.endswith("\n")
    assert text == json.dumps({"a1": agent("a1")}, ensure_ascii=True, indent=2)


def test_security_file_formatting_is_legacy(tmp_path):
    user = {"id": "u1", "org_id": "org_default", "email": "zoë@example.com", "profile": {"first_name": "Zoë"}}
    JsonStore(tmp_path).save("security/users", user)
    text = (tmp_path / "security" / "users.json").read_text(encoding="utf-8")
    assert "zoë@example.com" in text  # ensure_ascii=False
    assert text == json.dumps({"u1": user}, ensure_ascii=False, indent=2)


def test_chunks_index_is_one_line_list(tmp_path):
    store = JsonStore(tmp_path)
    store.save(
        "chunks_index",
        {"tool_id": "t1", "doc_id": "d1", "chunk_id": 0, "text": "a", "source": "x.pdf", "type": "document"},
    )
    store.save(
        "chunks_index",
        {"tool_id": "t1", "doc_id": "d1", "chunk_id": 1, "text": "b", "source": "x.pdf", "type": "document"},
    )
    store.save(
        "chunks_index",
        {"tool_id": "t1", "doc_id": "d1", "chunk_id": 0, "text": "a2", "source": "x.pdf", "type": "document"},
    )
    text = (tmp_path / "chunks_index.json").read_text()
    assert "\n" not in text
    data = json.loads(text)
    assert [(c["chunk_id"], c["text"]) for c in data] == [(0, "a2"), (1, "b")]
    assert store.get("chunks_index", "d1#1")["text"] == "b"
    assert store.delete("chunks_index", "d1#0")
    assert [c["chunk_id"] for c in store.all("chunks_index")] == [1]


def test_unchanged_sample_round_trips_byte_for_byte(sample_dir):
    """Saving every record of the real sample unchanged rewrites identical files."""
    store = JsonStore(sample_dir)
    for name in ("users", "roles", "organizations", "audit_logs"):
        collection = f"security/{name}"
        before = (sample_dir / "security" / f"{name}.json").read_bytes()
        records = store.all(collection)
        assert records, collection
        for record in records:
            store.save(collection, record)
        assert (sample_dir / "security" / f"{name}.json").read_bytes() == before, collection


def test_audit_log_list_append_and_replace(sample_dir):
    store = JsonStore(sample_dir)
    logs = store.all("security/audit_logs")
    assert len(logs) == 29
    new = dict(logs[0], id="00000000-0000-4000-8000-000000000001", action="logout")
    store.save("security/audit_logs", new)
    changed = dict(logs[3], success=False)
    store.save("security/audit_logs", changed)
    data = json.loads((sample_dir / "security" / "audit_logs.json").read_text())
    assert isinstance(data, list) and len(data) == 30
    assert data[-1]["id"] == new["id"]  # appended at the end, like the old logger
    assert data[3] == changed  # replaced in place: the order is kept


def test_outer_key_differing_from_inner_id(tmp_path):
    (tmp_path / "agents.json").write_text(json.dumps({"old-key": agent("a1")}, indent=2))
    store = JsonStore(tmp_path)
    assert store.get("agents", "a1")["id"] == "a1"
    store.save("agents", agent("a1", "New"))
    assert list(json.loads((tmp_path / "agents.json").read_text())) == ["a1"]


def test_unknown_collection_and_bad_records(tmp_path):
    store = JsonStore(tmp_path)
    with pytest.raises(UnknownCollection, match="settings"):
        store.save("settings", {"id": "x"})
    with pytest.raises(UnknownCollection):
        store.get("../etc/passwd", "x")
    with pytest.raises(ValueError, match="no id"):
        store.save("agents", {"name": "no id"})


def test_write_is_atomic_when_it_fails(tmp_path, monkeypatch):
    """A failing write leaves the old file intact and no temporary file behind."""
    store = JsonStore(tmp_path)
    store.save("agents", agent("a1"))
    before = (tmp_path / "agents.json").read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jsonfiles.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        store.save("agents", agent("a2"))
    monkeypatch.undo()
    assert (tmp_path / "agents.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agents.json", "agents.json.lock"]


def test_file_mode_is_kept(tmp_path):
    store = JsonStore(tmp_path)
    store.save("agents", agent("a1"))
    (tmp_path / "agents.json").chmod(0o640)
    store.save("agents", agent("a2"))
    assert (tmp_path / "agents.json").stat().st_mode & 0o777 == 0o640


WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {project!r})
    from legacy.store.json_store import JsonStore
    store = JsonStore(sys.argv[1])
    worker = sys.argv[2]
    for i in range(int(sys.argv[3])):
        store.save("agents", {{"id": f"{{worker}}-{{i}}", "name": f"agent {{i}} of {{worker}}", "icon": "\\U0001f916"}})
        store.save("security/audit_logs", {{"id": f"log-{{worker}}-{{i}}", "action": "create"}})
    """
)


def test_concurrent_processes_lose_nothing(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(project=str(PROJECT)))
    data = tmp_path / "data"
    workers, per_worker = 6, 25
    procs = [
        subprocess.Popen([sys.executable, str(script), str(data), f"w{n}", str(per_worker)], stderr=subprocess.PIPE)
        for n in range(workers)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    agents = json.loads((data / "agents.json").read_text())
    logs = json.loads((data / "security" / "audit_logs.json").read_text())
    expected = {f"w{n}-{i}" for n in range(workers) for i in range(per_worker)}
    assert set(agents) == expected
    assert {log["id"] for log in logs} == {f"log-{k}" for k in expected}
    assert len(logs) == workers * per_worker
    assert not [p for p in data.rglob("*.tmp")]
