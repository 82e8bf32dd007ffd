"""Shapes AgentForge's own code writes that the fixtures (tests/fixtures/agentforge) do not hold.

The late-era fixture was written with AgentForge's database unreachable (its README says why), so
every save went through the JSON fallbacks. With its database up, the same commit (``effb5d0``)
still writes every security file as a backup (``SecurityState.save_to_disk``), but from what it
loaded from the database, and that changes the shapes:

- ``SecurityState.__init__`` creates ``org_default`` (slug ``default``) in memory before
  ``load_from_disk`` adds the database's organizations under their UUIDs, and its database's default
  organization is the one with slug ``default`` (``OrganizationService.get_organization_by_id``
  turns ``org_default`` into it). ``organizations.json`` therefore holds two organizations with the
  slug ``default``; users, roles, departments and groups name the UUID in ``org_id``.
- ``load_from_disk`` stores the default organization's security settings as
  ``settings["org_default"]``, with that UUID as their ``org_id``; AgentForge looks them up by the
  key (``get_settings()`` defaults to ``"org_default"``).
- ``UserService._db_to_core_user`` writes ``password_hash: ""`` for a user without a password (the
  Google user) and ``""`` for the profile's phone and avatar.

Each is derived here from the late-era fixture, as that code changes it. The second half documents
app-file shapes of the same commit that already import and export losslessly (process agents,
conversations with an access cache and tool calls, demo-kit and table chunks).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from accounts.models import Organization, User
from agentforge_agents.models import Agent, Tool
from conversations.models import Conversation
from settings_app.models import OrgSetting
from tests.legacy_helpers import load_dir, rerun_changes_nothing, run_export, run_import, run_parity
from tests.test_export_json import _normalise

pytestmark = pytest.mark.django_db

LATE = Path(__file__).resolve().parent / "fixtures" / "agentforge" / "last-json-effb5d0"
DB_ORG = "5b0f3c1e-8a1d-4c2e-9f7a-2d6b1e4c8a90"  # the database's default organization (a UUID)
SECURITY_WITH_ORG = ("users", "roles", "departments", "groups")


def _read(root: Path, relative: str):
    return json.loads((root / relative).read_text(encoding="utf-8"))


def _write(root: Path, relative: str, data, ascii_only: bool) -> None:
    # security files: ensure_ascii=False; app files: json.dump's default (ASCII escapes)
    (root / relative).write_text(json.dumps(data, indent=2, ensure_ascii=ascii_only), encoding="utf-8")


def _late_copy(tmp_path) -> Path:
    root = tmp_path / "late"
    shutil.copytree(LATE, root)
    (root / "credentials.json").unlink()  # the driver's notes, not AgentForge's
    return root


def _database_up(root: Path) -> None:
    """The late era's security backups as written with its database up (see the module docstring)."""
    organizations = _read(root, "security/organizations.json")
    from_database = dict(organizations["org_default"])
    from_database.update(
        id=DB_ORG,
        settings={"plan": "free"},  # _db_to_core_org merges the plan column into settings
        created_at="2026-02-01T09:00:00.000001",
        updated_at="2026-02-01T09:00:00.000002",
    )
    organizations[DB_ORG] = from_database
    _write(root, "security/organizations.json", organizations, False)
    for name in SECURITY_WITH_ORG:
        relative = f"security/{name}.json"
        records = _read(root, relative)
        for record in records.values():
            if record.get("org_id") == "org_default":
                record["org_id"] = DB_ORG
            if name == "users":
                record["password_hash"] = record["password_hash"] or ""
                record["profile"]["phone"] = record["profile"]["phone"] or ""
                record["profile"]["avatar_url"] = record["profile"]["avatar_url"] or ""
        _write(root, relative, records, False)
    settings = _read(root, "security/settings.json")
    settings["settings"]["org_default"]["org_id"] = DB_ORG
    _write(root, "security/settings.json", settings, False)
    # The app files name no organization (org_default's), their users are the database's: the
    # agent endpoints store the creator in owner_id/created_by (from 2026-01-17)
    agents = _read(root, "agents.json")
    for agent in agents.values():
        agent["owner_id"] = agent["created_by"] = "user_super_admin"
    _write(root, "agents.json", agents, True)


def _assert_exported_as_written(root: Path, out: Path) -> None:
    original, exported = load_dir(root), load_dir(out)
    for relative, data in original.items():
        expected = _normalise(relative, data)
        if isinstance(expected, dict) and relative.startswith("security/") and relative != "security/settings.json":
            assert set(exported[relative]) == set(expected), relative
            for key, record in expected.items():
                assert exported[relative][key] == record, f"{relative}: record {key}"
        else:
            assert exported[relative] == expected, relative


@pytest.fixture
def database_up(tmp_path):
    root = _late_copy(tmp_path)
    _database_up(root)
    return root


# --- the late era with its database up -----------------------------------------------------------


def test_database_up_check_reports_nothing_blocking(database_up):
    output = run_import(database_up, check=True)
    assert "blocking" not in output
    assert not Organization.all_orgs.exists()


def test_two_organizations_with_the_slug_default_both_import(database_up):
    output = run_import(database_up, verbosity=2)
    rows = dict(Organization.all_orgs.values_list("legacy_id", "slug"))
    assert rows["org_default"] == "default"
    assert rows[DB_ORG] == "default-2"
    assert len(set(rows.values())) == len(rows)
    assert f"security/organizations.json: record {DB_ORG}: slug: 'default' is taken by 'org_default'" in output
    # the users follow the organization their org_id names
    users = _read(database_up, "security/users.json")
    in_db_org = {u["id"] for u in users.values() if u["org_id"] == DB_ORG}
    assert in_db_org
    assert set(User.all_orgs.filter(org__legacy_id=DB_ORG).values_list("legacy_id", flat=True)) == in_db_org


def test_security_settings_belong_to_their_org_id_and_keep_their_key(database_up, tmp_path):
    run_import(database_up, verbosity=0)
    owners = set(
        OrgSetting.all_orgs.filter(key="security.password_min_length").values_list("org__legacy_id", flat=True)
    )
    assert owners == {DB_ORG, "org_1e950518df95"}
    run_export(tmp_path / "out")
    assert _read(tmp_path / "out", "security/settings.json") == _read(database_up, "security/settings.json")


def test_links_into_another_organization_are_kept_as_dangling_references(database_up):
    """Conversations and agents (org_default's) name users that now belong to the database's
    organization. The database refuses a link across organizations (composite keys on PostgreSQL
    and MariaDB): the id is kept as a dangling reference, as for roles, on every backend."""
    output = run_import(database_up, verbosity=2)
    conversations = _read(database_up, "conversations.json")
    assert {c["user_id"] for c in conversations.values()} == {"user_super_admin"}
    assert Conversation.all_orgs.count() == len(conversations)
    assert not Conversation.all_orgs.filter(user__isnull=False).exists()
    assert not Agent.all_orgs.filter(owner__isnull=False).exists()
    assert not Agent.all_orgs.filter(created_by__isnull=False).exists()
    first = next(iter(conversations))
    assert (
        f"conversations.json: record {first}: user_id: 'user_super_admin' belongs to another organization "
        "(kept as a dangling reference)" in output
    )


def test_database_up_directory_exports_as_written_and_reimports_unchanged(database_up, tmp_path):
    run_import(database_up, verbosity=0)
    assert run_parity(database_up)[0] == 0
    run_export(tmp_path / "out")
    _assert_exported_as_written(database_up, tmp_path / "out")
    rerun_changes_nothing(database_up)


def test_a_slug_taken_in_the_database_is_not_taken_again(tmp_path):
    """The same rule against rows already imported: a later directory with another organization
    of a taken slug (in any case: MariaDB's collation ignores it) imports beside it."""
    root = _late_copy(tmp_path)
    run_import(root, verbosity=0)
    organizations = _read(root, "security/organizations.json")
    newcomer = dict(organizations["org_default"], id="org_0123456789ab", slug="DEFAULT")
    (tmp_path / "more" / "security").mkdir(parents=True)
    _write(tmp_path / "more", "security/organizations.json", {newcomer["id"]: newcomer}, False)
    run_import(tmp_path / "more", verbosity=0)
    assert Organization.all_orgs.get(legacy_id="org_0123456789ab").slug == "DEFAULT-2"
    assert Organization.all_orgs.get(legacy_id="org_default").slug == "default"
    run_export(tmp_path / "out")
    assert _read(tmp_path / "out", "security/organizations.json")["org_0123456789ab"] == newcomer


# --- app-file shapes of the same commit (already lossless; documented here) ------------------------


def _app_shapes(root: Path) -> None:
    agents = _read(root, "agents.json")
    agent = next(iter(agents.values()))
    # a process agent (api/main.py: AgentData.agent_type, process_definition, process_settings), with
    # memory and an owner, as the late era's create/update endpoints write it
    agent.update(
        agent_type="process",
        process_definition={
            "nodes": [
                {"id": "start_1", "type": "start", "position": {"x": 100, "y": 50.5}, "config": {"fields": []}},
                {"id": "end", "type": "end", "config": {}},
            ],
            "edges": [{"from": "start_1", "to": "end", "label": None}],
        },
        process_settings={"notifications": {"email": True}, "sla_hours": 24},
        memory=[{"timestamp": "2026-02-01T10:00:00.123456", "summary": "Talked", "key_facts": ["likes tea"]}],
        owner_id="user_super_admin",
        created_by="user_super_admin",
        updated_at="2026-02-01T10:00:00",  # utcnow() at a whole second: isoformat() has no fraction
    )
    _write(root, "agents.json", agents, True)
    conversations = _read(root, "conversations.json")
    conversation = next(iter(conversations.values()))
    # ConversationAccessCache, filled by the start-chat endpoint; tool calls of an assistant message
    conversation["access_cache"] = {
        "user_id": "user_super_admin",
        "user_name": "Süper Admin",
        "user_role": "Super Admin",
        "user_groups": [],
        "accessible_task_names": ["Answer policy questions"],
        "denied_task_names": [],
        "accessible_tool_ids": ["api:1740be8a-37df-43d5-ba21-e1a36ff471ed"],
        "denied_tool_ids": [],
        "loaded_at": "2026-02-01T10:00:00.5",
    }
    conversation["messages"][1]["tool_calls"] = [
        {"tool": "calculator", "arguments": {"a": 1}, "result": {"values": [1, 2.5, None]}}
    ]
    _write(root, "conversations.json", conversations, True)
    chunks = _read(root, "chunks_index.json")
    # the demo kit's and the table entry endpoint's chunks: no doc_id/page_id, string chunk ids,
    # a table entry whose source is null (TableEntryRequest.source defaults to None)
    chunks.append(
        {
            "chunk_id": "chunk-1a2b3c4d",
            "text": "## Doc\n\nHi",
            "source": "Doc",
            "type": "document",
            "tool_id": "demo-kb-1a2b3c4d",
        }
    )
    chunks.append(
        {
            "chunk_id": "table-1a2b3c4d",
            "text": "t",
            "source": None,
            "type": "table",
            "tool_id": "demo-kb-1a2b3c4d",
            "table_data": {"headers": ["a"], "rows": [["1"]]},
            "is_table": True,
            "rows_count": 1,
        }
    )
    (root / "chunks_index.json").write_text(json.dumps(chunks), encoding="utf-8")


def test_late_app_shapes_export_as_written(tmp_path):
    root = _late_copy(tmp_path)
    _app_shapes(root)
    run_import(root, verbosity=0)
    run_export(tmp_path / "out")
    _assert_exported_as_written(root, tmp_path / "out")


def test_a_tool_without_an_owner_is_not_a_dangling_reference(tmp_path):
    """``ToolConfiguration.owner_id`` defaults to ``""`` (api/main.py, from 2026-01-18): the demo kit
    and the tool endpoints of that era save tools without one. ``""`` is "no owner", not a user id."""
    root = tmp_path / "tools"
    root.mkdir()
    tools = {
        "demo-kb-1a2b3c4d": {
            "id": "demo-kb-1a2b3c4d",
            "type": "knowledge",
            "name": "Demo KB",
            "description": "",
            "config": {"collection_id": "demo-kb-1a2b3c4d"},
            "api_config": None,
            "kb_config": None,
            "documents": [],
            "scraped_pages": [],
            "created_at": "2026-02-01T10:00:00.000001",
            "is_active": True,
            "owner_id": "",
            "access_type": "owner_only",
            "allowed_user_ids": [],
            "allowed_group_ids": [],
            "can_edit_user_ids": [],
            "can_delete_user_ids": [],
            "can_execute_user_ids": [],
        }
    }
    _write(root, "tools.json", tools, True)
    output = run_import(root, verbosity=2)
    assert "owner_id" not in output
    tool = Tool.all_orgs.get(legacy_id="demo-kb-1a2b3c4d")
    assert tool.owner_id is None and not tool.system_owned
    run_export(tmp_path / "out")
    assert _read(tmp_path / "out", "tools.json") == tools
