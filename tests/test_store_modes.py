"""The database and dual stores on the configured backend: round trips, fallback reads,
deletes on both sides, scoping, and a lost JSON write found and repaired by verify_parity.

The dual-mode tests here write each save through (``DUAL_WRITE_DELAY=0``), so the file can
be read right after a save; the default, written behind, has tests/test_store_write_behind.py.
"""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agentforge_core.tenancy import OrgScopeError, org_scope, unscoped
from legacy.store import DatabaseStore, DualStore, failures, get_store, jsonfiles
from tests.legacy_helpers import run_parity, run_store_child

AGENT_ID = "3f0c9a52-1d7e-4f7e-9a55-0c1d2e3f4a5b"


def agent(agent_id=AGENT_ID, name="Helper", **more) -> dict:
    record = {
        "id": agent_id,
        "name": name,
        "icon": "\U0001f916",
        "goal": "Answer questions",
        "agent_type": "conversational",
        "personality": {"tone": "professional", "creativity": 5},
        "guardrails": {"cite_sources": True},
        "tasks": [{"id": "t1", "name": "Greet", "description": "", "instructions": [{"id": "i1", "text": "Say hi"}]}],
        "tool_ids": [],
        "model_id": "gpt-4o",
        "created_at": "2026-01-20T10:00:00.123456",
        "updated_at": "2026-01-21T11:30:00.654321",
        "status": "draft",
        "is_active": True,
        "memory": [],
        "memory_enabled": False,
        "owner_id": None,
        "created_by": None,
        "process_definition": None,
        "process_settings": None,
    }
    record.update(more)
    return record


@pytest.fixture(autouse=True)
def _write_through(settings):
    settings.DUAL_WRITE_DELAY = 0


@pytest.fixture(autouse=True)
def _reset_counters():
    failures._reset_for_tests()
    yield
    failures._reset_for_tests()


parity = run_parity


def json_file(data_dir, collection):
    return json.loads((data_dir / f"{collection}.json").read_text(encoding="utf-8"))


# --- get_store ----------------------------------------------------------------------------------


def test_get_store_follows_storage_mode(settings, tmp_path):
    settings.LEGACY_DATA_DIR = str(tmp_path)
    settings.STORAGE_MODE = "database"
    assert isinstance(get_store(), DatabaseStore)
    settings.STORAGE_MODE = "dual"
    store = get_store()
    assert isinstance(store, DualStore) and store.data_dir == tmp_path


# --- database mode --------------------------------------------------------------------------------


def test_database_mode_round_trip_touches_no_file(default_org, tmp_path, settings):
    settings.LEGACY_DATA_DIR = str(tmp_path)
    store = get_store("database")
    store.save("agents", agent())
    assert store.get("agents", AGENT_ID) == agent()  # the export form equals the legacy record
    store.save("agents", agent(name="Renamed", status="published"))
    got = store.get("agents", AGENT_ID)
    assert (got["name"], got["status"]) == ("Renamed", "published")
    assert [a["id"] for a in store.all("agents")] == [AGENT_ID]
    assert store.delete("agents", AGENT_ID) is True
    assert store.get("agents", AGENT_ID) is None
    assert store.delete("agents", AGENT_ID) is False
    assert list(tmp_path.iterdir()) == []

    from agentforge_agents.models import Agent

    assert not Agent.all_orgs.filter(legacy_id=AGENT_ID).exists()


def test_database_mode_save_that_loses_an_insert_race_updates(default_org, tmp_path, settings, monkeypatch):
    """Another process inserted the same new record between this save's read and its insert
    (CI saw it with two dual writers on MariaDB): the save retries and updates that row."""
    from agentforge_agents.models import Agent
    from legacy.migration.writer import Writer

    settings.LEGACY_DATA_DIR = str(tmp_path)
    store = get_store("database")
    store.save("agents", agent(name="Written by the other process"))
    real_fetch = Writer._fetch_existing
    blind = {"reads": 0}

    def fetch_missing_the_other_insert(self, *args):
        blind["reads"] += 1
        return {} if blind["reads"] == 1 else real_fetch(self, *args)

    monkeypatch.setattr(Writer, "_fetch_existing", fetch_missing_the_other_insert)
    assert store.save("agents", agent(name="Written by this one")) == AGENT_ID
    assert blind["reads"] >= 2
    assert list(Agent.all_orgs.filter(legacy_id=AGENT_ID).values_list("name", flat=True)) == ["Written by this one"]


def test_database_mode_sample_users_read_back_as_exported(imported):
    store = DatabaseStore()
    users = {u["id"]: u for u in store.all("security/users")}
    on_disk = json_file(imported, "security/users")
    assert set(users) == set(on_disk)
    user_id = "85900a07-fe70-473b-99d2-795a46862009"
    user = store.get("security/users", user_id)
    assert user["email"] == on_disk[user_id]["email"]
    assert user["password_hash"] == on_disk[user_id]["password_hash"]  # the legacy hash, losslessly
    user["profile"]["job_title"] = "CTO"
    store.save("security/users", user)
    assert store.get("security/users", user_id)["profile"]["job_title"] == "CTO"


def test_database_mode_scoping(imported, make_org):
    store = DatabaseStore()
    other = make_org("Other")
    store.save("agents", agent())
    user_id = "85900a07-fe70-473b-99d2-795a46862009"
    with org_scope(other):
        # Another organization sees neither org_default's users nor its agents...
        assert store.get("security/users", user_id) is None
        assert store.all("agents") == []
        # ...and cannot write or delete them.
        with pytest.raises(OrgScopeError):
            store.save("agents", agent(name="Hijack"))
        assert store.delete("agents", AGENT_ID) is False
    with org_scope("org_default"):
        assert store.get("agents", AGENT_ID)["name"] == "Helper"
        assert len(store.all("security/users")) == 5
    with unscoped():
        assert store.get("security/users", user_id) is not None
    strict = DatabaseStore(strict=True)
    with pytest.raises(OrgScopeError):
        strict.get("agents", AGENT_ID)


def test_database_mode_audit_entries_are_append_only(imported):
    from legacy.store.db_store import AppendOnlyError

    store = DatabaseStore()
    entry = store.all("security/audit_logs")[0]
    store.save("security/audit_logs", entry)  # saving it again unchanged: a no-op
    with pytest.raises(AppendOnlyError):
        store.save("security/audit_logs", dict(entry, success=not entry["success"]))
    with pytest.raises(AppendOnlyError):
        store.delete("security/audit_logs", entry["id"])
    new = dict(entry, id="0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", action="logout", details={})
    store.save("security/audit_logs", new)
    assert store.get("security/audit_logs", new["id"])["action"] == "logout"

    from security.audit import verify_all

    assert all(report.ok for report in verify_all())


# --- dual mode --------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_dual_save_writes_database_then_json(imported):
    store = DualStore(imported)
    store.save("agents", agent())
    from agentforge_agents.models import Agent

    assert Agent.all_orgs.get(legacy_id=AGENT_ID).name == "Helper"
    on_disk = json_file(imported, "agents")
    assert on_disk == {AGENT_ID: agent()}
    text = (imported / "agents.json").read_text()
    assert "\\ud83e\\udd16" in text and not text.endswith("\n")  # legacy app-file formatting
    assert store.get("agents", AGENT_ID) == agent()
    assert parity(imported) == (0, "No drift: 21 collection(s) match.\n")


@pytest.mark.django_db(transaction=True)
def test_dual_json_write_waits_for_the_outer_commit(imported):
    from django.db import transaction

    store = DualStore(imported)
    with transaction.atomic():
        store.save("agents", agent())
        assert not (imported / "agents.json").exists()  # not before the commit
    assert AGENT_ID in json_file(imported, "agents")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        store.save("agents", agent("9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a", "Rolled back"))
        raise Boom
    assert list(json_file(imported, "agents")) == [AGENT_ID]
    assert store.get("agents", "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a") is None


@pytest.mark.django_db(transaction=True)
def test_dual_reads_fall_back_to_json(imported):
    """Records the database does not have yet are read from the JSON file."""
    only_json = agent("5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d", "Only in JSON")
    (imported / "agents.json").write_text(json.dumps({only_json["id"]: only_json}, indent=2))
    store = DualStore(imported)
    store.save("agents", agent())
    assert store.get("agents", only_json["id"]) == only_json
    assert {a["id"] for a in store.all("agents")} == {AGENT_ID, only_json["id"]}
    assert failures.fallback_reads()["agents"] >= 2
    # Scoped: a JSON-only app record belongs to org_default.
    from accounts.models import Organization

    other = Organization.all_orgs.create(name="Other", slug="other-fallback")
    with org_scope(other):
        assert store.get("agents", only_json["id"]) is None
        assert store.all("agents") == []
    with org_scope("org_default"):
        assert store.get("agents", only_json["id"])["name"] == "Only in JSON"
    assert DatabaseStore().get("agents", only_json["id"]) is None


@pytest.mark.django_db(transaction=True)
def test_dual_deletes_reach_both_sides(imported):
    store = DualStore(imported)
    store.save("agents", agent())
    only_json = agent("5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d", "Only in JSON")
    jsonfiles.LegacyFiles(imported).put("agents", only_json)

    assert store.delete("agents", AGENT_ID) is True
    assert DatabaseStore().get("agents", AGENT_ID) is None
    assert AGENT_ID not in json_file(imported, "agents")

    assert store.delete("agents", only_json["id"]) is True  # a record not in the database yet
    assert json_file(imported, "agents") == {}
    assert store.delete("agents", only_json["id"]) is False

    role = "role_viewer"
    assert store.delete("security/roles", role) is True
    assert role not in json_file(imported, "security/roles")
    assert DatabaseStore().get("security/roles", role) is None
    assert parity(imported)[0] == 0


@pytest.mark.django_db(transaction=True)
def test_dual_sample_user_update_keeps_parity(imported):
    store = DualStore(imported)
    user_id = "e25d487b-dcc3-4d14-b063-88203baf23e0"
    user = store.get("security/users", user_id)
    user["profile"]["first_name"] = "Zoë"
    user["failed_login_attempts"] = 3
    store.save("security/users", user)
    on_disk = json_file(imported, "security/users")[user_id]
    assert on_disk["profile"]["first_name"] == "Zoë"
    assert "Zoë" in (imported / "security" / "users.json").read_text(encoding="utf-8")  # ensure_ascii=False
    assert on_disk["failed_login_attempts"] == 3
    assert parity(imported)[0] == 0


@pytest.mark.django_db(transaction=True)
def test_lost_json_write_is_counted_found_and_repaired(imported, monkeypatch, caplog):
    """A crash between the database commit and the JSON write: the database keeps the
    change, the failure is counted, verify_parity reports the drift, --fix-from db repairs."""
    store = DualStore(imported)
    store.save("agents", agent())
    user_id = "85900a07-fe70-473b-99d2-795a46862009"
    user = store.get("security/users", user_id)

    def disk_full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jsonfiles, "atomic_write_text", disk_full)
    store.save("agents", agent(name="Changed after the crash"))
    user["profile"]["last_name"] = "Renamed"
    store.save("security/users", user)
    assert store.delete("security/roles", "role_viewer") is True
    monkeypatch.undo()

    assert failures.dual_write_failures() == 3
    assert [f["collection"] for f in failures.recent_dual_write_failures()] == [
        "agents",
        "security/users",
        "security/roles",
    ]
    assert "verify_parity --fix-from db" in caplog.text
    # The database has every change...
    assert DatabaseStore().get("agents", AGENT_ID)["name"] == "Changed after the crash"
    # ...the files are behind...
    assert json_file(imported, "agents")[AGENT_ID]["name"] == "Helper"

    status, report = parity(imported)
    assert status == 1
    assert f'agents\t{AGENT_ID}\tname\tjson="Helper"\tdb="Changed after the crash"' in report
    assert f'security/users\t{user_id}\tprofile.last_name\tjson="Admin"\tdb="Renamed"' in report
    assert 'security/roles\trole_viewer\t<record>\tjson="present"\tdb=<absent>' in report

    status, report = parity(imported, "--fix-from", "db")
    assert status == 0, report
    assert json_file(imported, "agents")[AGENT_ID]["name"] == "Changed after the crash"
    assert "role_viewer" not in json_file(imported, "security/roles")
    assert parity(imported) == (0, "No drift: 21 collection(s) match.\n")


@pytest.mark.django_db(transaction=True)
def test_crashed_child_process_is_repaired(imported, tmp_path):
    """A process killed after the database commit, before its JSON write."""
    body = (
        "def die(*a, **k):\n    os._exit(9)\n"
        "jsonfiles.LegacyFiles.apply = die\n"
        f"get_store().save('agents', {agent(name='Saved then killed')!r})\n"
    )
    result = run_store_child(tmp_path, imported, body, delay="0")
    assert result.returncode == 9, result.stderr.decode()
    assert DatabaseStore().get("agents", AGENT_ID)["name"] == "Saved then killed"
    assert not (imported / "agents.json").exists()
    status, report = parity(imported)
    assert status == 1 and f"agents\t{AGENT_ID}\t<record>\tjson=<absent>" in report
    assert parity(imported, "--fix-from", "db")[0] == 0
    assert json_file(imported, "agents")[AGENT_ID]["name"] == "Saved then killed"


@pytest.mark.django_db(transaction=True)
def test_fix_from_json_writes_the_files_into_the_database(imported):
    users = json_file(imported, "security/users")
    user_id = "5339d5b6-3dec-454a-8682-78ef75de1580"
    users[user_id]["profile"]["job_title"] = "Edited by hand"
    (imported / "security" / "users.json").write_text(json.dumps(users, ensure_ascii=False, indent=2), encoding="utf-8")
    roles = json_file(imported, "security/roles")
    del roles["role_viewer"]
    (imported / "security" / "roles.json").write_text(json.dumps(roles, ensure_ascii=False, indent=2), encoding="utf-8")

    status, report = parity(imported, "--collection", "security/users")
    assert status == 1 and "profile.job_title" in report and "role_viewer" not in report
    status, report = parity(imported, "--fix-from", "json")
    assert status == 0, report
    assert DatabaseStore().get("security/users", user_id)["profile"]["job_title"] == "Edited by hand"
    assert DatabaseStore().get("security/roles", "role_viewer") is None
    assert parity(imported) == (0, "No drift: 21 collection(s) match.\n")


def test_verify_parity_rejects_unknown_collection(imported):
    with pytest.raises(CommandError, match="unknown collection"):
        call_command("verify_parity", "--data-dir", str(imported), "--collection", "nope")


def test_database_mode_saves_a_role_and_adds_its_new_permission_to_the_catalog(imported):
    from accounts.models import Permission

    store = DatabaseStore()
    role = store.get("security/roles", "role_admin")
    assert "reports:export" not in role["permissions"]
    assert not Permission.objects.filter(codename="reports:export").exists()
    role["permissions"] = [*role["permissions"], "reports:export"]
    role["description"] = "Administers the organization"
    store.save("security/roles", role)
    saved = store.get("security/roles", "role_admin")
    assert saved["permissions"] == role["permissions"]
    assert saved["description"] == "Administers the organization"
    assert Permission.objects.filter(codename="reports:export").count() == 1


def test_database_mode_saves_a_group_and_keeps_its_members(imported):
    store = DatabaseStore()
    user_id = "85900a07-fe70-473b-99d2-795a46862009"
    group = {
        "id": "grp_0123456789ab",
        "org_id": "org_default",
        "name": "Support",
        "description": "First line",
        "user_ids": [user_id],
        "role_ids": [],
        "created_at": "2026-01-10T08:00:00.000001",
        "updated_at": "2026-01-10T08:00:00.000001",
    }
    store.save("security/groups", group)
    saved = store.get("security/groups", group["id"])
    assert (saved["name"], saved["user_ids"]) == ("Support", [user_id])
    store.save("security/groups", dict(saved, name="Support desk"))
    renamed = store.get("security/groups", group["id"])
    assert (renamed["name"], renamed["user_ids"]) == ("Support desk", [user_id])


def test_building_a_roles_mapper_context_writes_nothing(imported):
    from accounts.models import Permission
    from legacy.store.db_store import context_for

    before = Permission.objects.count()
    ctx = context_for("security/roles", {"id": "role_new", "permissions": ["users:view", "reports:export"]})
    assert Permission.objects.count() == before
    assert "users:view" in ctx.permission_ids and "reports:export" not in ctx.permission_ids
