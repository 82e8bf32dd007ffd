"""Dual mode's JSON side written behind the database: several saves, one rewrite, within a
bounded delay; flushed at exit; a crash in between found and repaired by verify_parity; the
file's text the legacy formatting, byte for byte, however it was reached."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from legacy.store import DatabaseStore, DualStore, jsonfiles
from legacy.store.jsonfiles import _Image, dumps
from tests.legacy_helpers import run_store_child
from tests.test_store_modes import AGENT_ID, agent, json_file, parity

PROJECT = Path(__file__).resolve().parent.parent

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
records = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@hsettings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["agents", "security/users", "security/audit_logs", "chunks_index"]),
    st.lists(records, max_size=6),
    st.data(),
)
def test_rendered_text_is_the_legacy_formatting(collection, items, data):
    container = items if collection in jsonfiles.LIST_COLLECTIONS else {f"k{i}": r for i, r in enumerate(items)}
    image = _Image(container)
    assert image.render(collection) == dumps(collection, container)
    # After changing some records in place of others, only those are re-serialised and
    # the text is still exactly the legacy one.
    if items:
        index = data.draw(st.integers(0, len(items) - 1))
        replacement = data.draw(records)
        if isinstance(container, dict):
            container[f"k{index}"] = replacement
            container["new"] = data.draw(records)
        else:
            container[index] = replacement
            container.append(data.draw(records))
        assert image.render(collection) == dumps(collection, container)


@pytest.fixture
def spy_writes(monkeypatch):
    writes = []
    original = jsonfiles.atomic_write_text

    def spy(path, text):
        writes.append(Path(path).name)
        return original(path, text)

    monkeypatch.setattr(jsonfiles, "atomic_write_text", spy)
    return writes


def wait_for(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"not true within {seconds} s")


@pytest.mark.django_db(transaction=True)
def test_saves_within_the_delay_share_one_rewrite(imported, settings, spy_writes):
    settings.DUAL_WRITE_DELAY = 1
    store = DualStore(imported)
    ids = ["%08x-0000-4000-8000-%012x" % (7, n) for n in range(30)]
    first_commit = time.monotonic()
    for n, agent_id in enumerate(ids):
        store.save("agents", agent(agent_id, name=f"agent {n}"))  # 30 commits
    saving = time.monotonic() - first_commit
    agents_file = imported / "agents.json"  # the sample has none until the first write
    written = wait_for(lambda: agents_file.exists() and set(ids) <= set(json_file(imported, "agents")))
    # One rewrite per second of saves at most (the machine decides how many seconds the
    # 30 commits take), and the file never more than the delay plus one rewrite behind.
    assert 1 <= spy_writes.count("agents.json") <= 1 + int(saving)
    assert written - first_commit < saving + 1 + 1.0
    assert parity(imported)[0] == 0


@pytest.mark.django_db(transaction=True)
def test_commits_of_one_transaction_are_one_rewrite(imported, settings, spy_writes):
    from django.db import transaction

    settings.DUAL_WRITE_DELAY = 0.25
    store = DualStore(imported)
    with transaction.atomic():
        for n in range(10):
            store.save("agents", agent("%08x-0000-4000-8000-%012x" % (8, n), name=f"agent {n}"))
        store.delete("security/roles", "role_viewer")
    store.flush()
    assert spy_writes.count("agents.json") == 1 and spy_writes.count("roles.json") == 1
    assert len(json_file(imported, "agents")) == 10


@pytest.mark.django_db(transaction=True)
def test_flush_writes_what_is_queued_now(imported, settings):
    settings.DUAL_WRITE_DELAY = 1
    store = DualStore(imported)
    store.save("agents", agent(name="Queued"))
    store.delete("security/roles", "role_viewer")
    store.flush()
    assert json_file(imported, "agents")[AGENT_ID]["name"] == "Queued"
    assert "role_viewer" not in json_file(imported, "security/roles")


@pytest.mark.django_db(transaction=True)
def test_a_file_replaced_by_another_process_is_read_again(imported, settings):
    """The cached image of a file is used only while the file is the one this process wrote."""
    settings.DUAL_WRITE_DELAY = 0
    store = DualStore(imported)
    store.save("agents", agent(name="Ours"))
    on_disk = json_file(imported, "agents")
    on_disk["written-elsewhere"] = {"id": "written-elsewhere", "name": "by another process"}
    jsonfiles.atomic_write_text(imported / "agents.json", dumps("agents", on_disk))  # a new inode
    store.save("agents", agent("11111111-2222-4333-8444-555555555555", name="Second"))
    after = json_file(imported, "agents")
    assert after["written-elsewhere"]["name"] == "by another process"
    assert {AGENT_ID, "11111111-2222-4333-8444-555555555555"} <= set(after)
    assert (imported / "agents.json").read_text() == dumps("agents", after)


@pytest.mark.django_db(transaction=True)
def test_queued_writes_are_flushed_at_exit(imported, tmp_path):
    result = run_store_child(
        tmp_path, imported, f"get_store().save('agents', {agent(name='Saved, then exit')!r})\n", "1"
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert json_file(imported, "agents")[AGENT_ID]["name"] == "Saved, then exit"
    assert parity(imported)[0] == 0


@pytest.mark.django_db(transaction=True)
def test_a_crash_inside_the_delay_is_found_and_repaired(imported, tmp_path):
    """Killed after the commit and before the rewrite: the durability rule's one gap."""
    body = f"get_store().save('agents', {agent(name='Saved, then killed')!r})\nos._exit(9)\n"
    result = run_store_child(tmp_path, imported, body, "1")
    assert result.returncode == 9, result.stderr.decode()[-2000:]
    assert DatabaseStore().get("agents", AGENT_ID)["name"] == "Saved, then killed"
    assert not (imported / "agents.json").exists()  # the sample has no agents.json; nothing wrote one
    status, report = parity(imported)
    assert status == 1 and f"agents\t{AGENT_ID}\t<record>\tjson=<absent>" in report
    assert parity(imported, "--fix-from", "db")[0] == 0
    assert json_file(imported, "agents")[AGENT_ID]["name"] == "Saved, then killed"


def test_the_delay_is_bounded():
    for value, ok in (("0", True), ("0.25", True), ("1", True), ("1.5", False), ("-1", False), ("soon", False)):
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='tests.settings'; django.setup()",
            ],
            cwd=PROJECT,
            env=dict(os.environ, DUAL_WRITE_DELAY=value),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (result.returncode == 0) is ok, (value, result.stderr[-500:])
        if not ok:
            assert "DUAL_WRITE_DELAY" in result.stderr
