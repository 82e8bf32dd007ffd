"""import_json on a generated corpus with every pitfall of docs/legacy-format.md §10, and on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import check_password, get_hasher
from django.core.management.base import CommandError
from django.db import connection

from accounts.models import (
    Department,
    Group,
    GroupMembership,
    GroupRole,
    MFASettings,
    Organization,
    PasswordHistory,
    Role,
    User,
    UserRole,
)
from agentforge_agents.models import Agent, AgentTool, Tool, ToolPermission
from agentforge_core.crypto import sha256_hex
from agentforge_core.tenancy import unscoped
from conversations.models import Conversation, Message
from knowledge.models import Document, DocumentChunk
from legacy.models import LegacyRecord
from security.models import AuditLog, LDAPConfig, OAuthConfig
from settings_app.models import OrgSetting, SystemSetting, UserPreference
from tests import legacy_corpus as C
from tests.legacy_helpers import dump, rerun_changes_nothing, run_import

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    facts = C.write_corpus(root)
    return root, facts


@pytest.fixture
def imported(corpus):
    root, facts = corpus
    output = run_import(root)
    return root, facts, output


def test_counts_and_homes(imported):
    root, facts, output = imported
    assert Organization.all_orgs.count() == 2
    assert User.all_orgs.count() == 4
    assert Role.all_orgs.count() == 6 and Department.all_orgs.count() == 2 and Group.all_orgs.count() == 2
    assert Tool.all_orgs.count() == 5 and Agent.all_orgs.count() == 2
    assert Conversation.all_orgs.count() == 4 and Message.all_orgs.count() == 3
    assert Document.all_orgs.filter(source="upload").count() == 1
    assert Document.all_orgs.filter(source="web").count() == 1
    assert AuditLog.all_orgs.count() == 6
    assert ToolPermission.all_orgs.count() == 2
    assert LDAPConfig.all_orgs.count() == 1 and OAuthConfig.all_orgs.count() == 1
    assert LegacyRecord.all_orgs.values_list("collection", flat=True).order_by("collection").distinct().count() == 5
    assert LegacyRecord.all_orgs.filter(collection="lab").count() == 2
    assert "uploads/ (binary files, left on disk): 1" in output
    assert "lab/ binary files" in output
    assert "warning(s)" in output


def test_non_uuid_ids_map_deterministically(imported):
    from agentforge_core.models import legacy_uuid

    kit = Tool.all_orgs.get(legacy_id=C.T_KIT)
    assert kit.pk == legacy_uuid("tools", C.T_KIT)
    assert Organization.all_orgs.get(legacy_id="org_abc123def456").pk == legacy_uuid(
        "organizations", "org_abc123def456"
    )
    assert str(User.all_orgs.get(legacy_id=C.U1).pk) == C.U1


def test_old_passwords_verify_and_wrong_ones_do_not(imported):
    _, facts, _ = imported
    for uid, plain in facts["passwords"].items():
        user = User.all_orgs.get(legacy_id=uid)
        assert user.password.startswith("pbkdf2_sha256$100000$")
        assert check_password(plain, user.password), uid
        assert not check_password(plain + "x", user.password)
    assert not User.all_orgs.get(legacy_id=C.U3).has_usable_password()  # OAuth only


def test_history_and_backup_codes_verify(imported):
    _, facts, _ = imported
    user = User.all_orgs.get(legacy_id=C.U1)
    history = list(PasswordHistory.all_orgs.filter(user=user).order_by("position"))
    assert [h.position for h in history] == [0, 1]
    assert check_password(facts["history_plain"], history[0].password_hash)  # 2-part entry
    assert check_password("x2", history[1].password_hash)
    mfa = MFASettings.all_orgs.get(user=user)
    assert any(check_password(facts["backup_code"], code) for code in mfa.backup_codes)
    assert not any(check_password("00000000", code) for code in mfa.backup_codes)


def test_login_upgrades_the_legacy_hash(imported):
    _, facts, _ = imported
    user = authenticate(email="admin@example.com", password=facts["passwords"][C.U1], org=Organization.get_default())
    assert user is not None and user.legacy_id == C.U1
    user.refresh_from_db()
    # PBKDF2 at Django's iteration count while a rollback is possible (tests/test_rollback_passwords.py)
    assert user.password.startswith(f"pbkdf2_sha256${get_hasher('pbkdf2_sha256').iterations}$")
    assert authenticate(email="admin@example.com", password="nope", org=Organization.get_default()) is None


def test_stale_secrets_stay_dead(imported):
    u1 = User.all_orgs.get(legacy_id=C.U1)
    assert u1.verification_token_hash is None  # verified user: stale
    mfa1 = MFASettings.all_orgs.get(user=u1)
    assert mfa1.totp_secret == "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP" and not mfa1.enabled and not mfa1.is_active
    assert mfa1.email_code_hash is None
    u2 = User.all_orgs.get(legacy_id=C.U2)
    assert u2.verification_token_hash == sha256_hex("valid-verification-token")
    assert u2.reset_password_token_hash == sha256_hex("valid-reset-token")
    assert MFASettings.all_orgs.get(user__legacy_id=C.U4).is_active


def test_secrets_are_encrypted_and_removed_from_plain_json(imported):
    api = Tool.all_orgs.get(legacy_id=C.T_API)
    assert api.credentials == {
        "api_config.auth_value": "sk-api-secret",
        "api_config.headers.Authorization": "Bearer hdr-secret",
    }
    assert "auth_value" not in api.api_config and api.api_config["headers"] == {"Accept": "json"}
    kb = Tool.all_orgs.get(legacy_id=C.T_KB)
    assert kb.credentials == {
        "kb_config.embedding.api_key": "emb-secret",
        "kb_config.vector_db.pinecone_api_key": "pc-secret",
    }
    assert kb.system_owned and kb.owner_id is None
    assert Tool.all_orgs.get(legacy_id=C.T_EMAIL).credentials == {"config.smtp_pass": "smtp-secret"}
    llm = SystemSetting.objects.get(key="llm.api_key")
    assert llm.is_secret and llm.get_value() == "sk-llm-secret" and llm.value is None
    assert SystemSetting.objects.get(key="llm_providers.0.api_key").get_value() == "sk-ant-secret"
    assert SystemSetting.objects.get(key="integrations.google.client_secret").get_value() == "sys-g-secret"
    assert SystemSetting.objects.get(key="llm.model").value == "gpt-4o"
    with unscoped(), connection.cursor() as cursor:
        for sql in (
            "SELECT credentials FROM tools",
            "SELECT google_client_secret FROM organizations WHERE google_client_secret IS NOT NULL",
            "SELECT bind_password FROM ldap_configs",
            "SELECT client_secret FROM oauth_configs",
            "SELECT secret_value FROM system_settings WHERE is_secret = %s AND secret_value <> ''",
            "SELECT secret FROM legacy_records WHERE secret IS NOT NULL",
        ):
            cursor.execute(sql, [True] if "%s" in sql else None)
            values = [row[0] for row in cursor.fetchall()]
            assert values and all(v.startswith(("fernet$", "aesgcm$")) for v in values), sql
    invitation = LegacyRecord.all_orgs.get(collection="security/invitations")
    assert invitation.data["token"] is None
    assert invitation.data["token_sha256"] == sha256_hex("0123456789abcdef0123456789abcdef")
    assert invitation.secret == "0123456789abcdef0123456789abcdef"  # decrypted on read, for the export


def test_references_prefixes_dangling_and_membership_union(imported):
    agent = Agent.all_orgs.get(legacy_id=C.A1)
    refs = list(AgentTool.all_orgs.filter(agent=agent).order_by("position").values_list("tool_ref", "tool__legacy_id"))
    assert refs == [
        (f"api:{C.T_API}", C.T_API),
        (f"kb:{C.T_KB}", C.T_KB),
        ("gone-tool-id", None),
        (C.T_EMAIL, C.T_EMAIL),
    ]
    orphan = Conversation.all_orgs.get(legacy_id=C.C2)
    assert orphan.agent_id is None and orphan.legacy_extra["__dangling__"]["agent_id"].startswith("bbbbbbbb-dead")
    assert Conversation.all_orgs.get(legacy_id=C.C3).is_test
    old = Group.all_orgs.get(legacy_id="grp_aaaaaaaaaaaa")
    members = set(GroupMembership.all_orgs.filter(group=old).values_list("user__legacy_id", flat=True))
    assert members == {C.U1, C.U2}  # U2 only through users[].group_ids
    new = Group.all_orgs.get(legacy_id="eeeeeeee-0000-4000-8000-000000000001")
    assert set(GroupMembership.all_orgs.filter(group=new).values_list("user__legacy_id", flat=True)) == {C.U1, C.U3}
    assert list(GroupRole.all_orgs.filter(group=old).values_list("role__legacy_id", flat=True)) == ["role_manager"]
    u2 = User.all_orgs.get(legacy_id=C.U2)
    assert list(UserRole.all_orgs.filter(user=u2).order_by("position").values_list("role__legacy_id", "position")) == [
        ("role_user", 0),
        ("role_0123456789ab", 2),
    ]
    assert u2.manager.legacy_id == C.U1 and u2.last_login_ip is None
    runner = Role.all_orgs.get(legacy_id="role_0123456789ab")
    assert runner.parent.legacy_id == "role_user" and "chat:use" in runner.effective_permissions()
    assert LDAPConfig.all_orgs.get().is_org_directory
    assert ToolPermission.all_orgs.get(legacy_id="tp_aaaaaaaaaaaa").tool_id is None
    audit = AuditLog.all_orgs.get(legacy_id="ffffffff-0000-4000-8000-000000000004")
    assert audit.actor_id is None and audit.legacy_user_id.startswith("00000000-dead")
    assert audit.changes == {"status": {"old": "pending", "new": "active"}} and audit.action == 1
    assert AuditLog.all_orgs.get(legacy_id="ffffffff-0000-4000-8000-000000000001").remote_addr is None


def test_era_defaults_and_unknown_keys(imported):
    u3 = User.all_orgs.get(legacy_id=C.U3)
    assert u3.has_enduser_access and not u3.has_admin_access
    assert set(u3.legacy_extra["__missing__"]) >= {
        "has_admin_access",
        "has_enduser_access",
        "manager_id",
        "employee_id",
    }
    assert len(User.all_orgs.get(legacy_id=C.U1).avatar_url) == 1126
    assert User.all_orgs.get(legacy_id=C.U4).legacy_extra["unknown_future_field"] == {"x": 1}
    assert Tool.all_orgs.get(legacy_id=C.T_OLD).access_type == "owner_only"
    assert Agent.all_orgs.get(legacy_id=C.A2).agent_type == "conversational"
    assert Organization.all_orgs.get(legacy_id="org_default").directory_source == "internal"
    assert Agent.all_orgs.get(legacy_id=C.A1).icon == "\U0001f916"
    prefs = UserPreference.all_orgs.get(user__legacy_id=C.U1)
    assert prefs.custom_attributes == {"team": "core"}
    assert OrgSetting.all_orgs.get(org__legacy_id="org_abc123def456", key="security.password_min_length").value == 12
    assert SystemSetting.objects.get(key="security.tenancy_mode").value == "multi"


def test_chunks_merge_index_and_embedded_copies(imported):
    doc = Document.all_orgs.get(legacy_id=C.D1)
    chunks = {c.chunk_id: c for c in DocumentChunk.all_orgs.filter(document=doc)}
    assert set(chunks) == {"0", "1", "2"}
    assert chunks["1"].text == "Chunk one." and chunks["1"].in_index  # the index copy is the one used
    assert chunks["1"].legacy_extra["__embedded__"]["text"] == "Chunk one (embedded copy)."
    assert (chunks["1"].start_offset, chunks["1"].end_offset) == (12, 22)
    assert not chunks["2"].in_index and chunks["2"].chunk_number == 2
    table = DocumentChunk.all_orgs.get(chunk_id="table-1a2b3c4d")
    assert table.is_table and table.table_data["rows"] == [[1, 2]] and table.chunk_number is None
    orphan = DocumentChunk.all_orgs.get(text="orphan")
    assert orphan.document_id is None
    page = Document.all_orgs.get(legacy_id=C.P1)
    assert page.source == "web" and DocumentChunk.all_orgs.get(document=page).in_index


def test_rerun_and_skip_existing_change_nothing(imported):
    root, _, _ = imported
    assert " 0 " in rerun_changes_nothing(root)


def test_changed_record_is_updated_on_rerun(imported, tmp_path):
    root, _, _ = imported
    import shutil

    copy = tmp_path / "changed"
    shutil.copytree(root, copy)
    agents = json.loads((copy / "agents.json").read_text())
    agents[C.A1]["name"] = "Renamed"
    agents[C.A1]["tool_ids"] = [C.T_EMAIL]
    (copy / "agents.json").write_text(json.dumps(agents, indent=2))
    run_import(copy, skip_existing=True, verbosity=0)
    assert Agent.all_orgs.get(legacy_id=C.A1).name == "Helper"
    run_import(copy, verbosity=0)
    agent = Agent.all_orgs.get(legacy_id=C.A1)
    assert agent.name == "Renamed"
    assert list(AgentTool.all_orgs.filter(agent=agent).values_list("tool_ref", flat=True)) == [C.T_EMAIL]


def test_dry_run_and_check_write_nothing(corpus):
    root, _ = corpus
    before = dump()
    assert "DRY RUN" in run_import(root, dry_run=True)
    assert dump() == before
    output = run_import(root, check=True)
    assert "CHECK" in output and "refers to no" in output
    assert dump() == before


# --- bad input: each class fails with a precise message and writes nothing ---------------------


def _corrupt(tmp_path, corpus, relative, mutate=None, text=None):
    import shutil

    root, _ = corpus
    target = tmp_path / "bad"
    shutil.copytree(root, target)
    path = target / relative
    if text is not None:
        path.write_text(text, encoding="utf-8")
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
        mutate(data)
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return target


def _fails(target, *fragments, **options):
    before = dump()
    with pytest.raises(CommandError) as excinfo:
        run_import(target, verbosity=0, **options)
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in message
    assert dump() == before
    return message


def test_wrong_type_names_file_record_and_field(tmp_path, corpus):
    target = _corrupt(tmp_path, corpus, "security/users.json", lambda d: d[C.U2].update(email=12345))
    _fails(target, f"security/users.json: record {C.U2}: email: expected a string, got 12345")


def test_wrong_type_late_in_a_streamed_file_rolls_everything_back(tmp_path, corpus):
    target = _corrupt(tmp_path, corpus, "security/audit_logs.json", lambda d: d[-1].update(success="yes"))
    _fails(
        target, "security/audit_logs.json: record ffffffff-0000-4000-8000-000000000005: success: expected true or false"
    )
    assert User.all_orgs.count() == 0


def test_malformed_json_names_line_and_column(tmp_path, corpus):
    target = _corrupt(tmp_path, corpus, "security/roles.json", text='{\n  "role_x": {\n    "id": "role_x",,\n  }\n}')
    _fails(target, "security/roles.json: malformed JSON at line 3, column 20")


def test_malformed_streamed_json_names_line_and_column(tmp_path, corpus):
    target = _corrupt(tmp_path, corpus, "conversations.json", text='{\n  "a": {"id": "a", "messages": [}\n}')
    _fails(target, "conversations.json: malformed JSON at line 2")


def test_unknown_enum_value(tmp_path, corpus):
    target = _corrupt(tmp_path, corpus, "agents.json", lambda d: d[C.A1].update(status="ARCHIVED"))
    _fails(target, f"agents.json: record {C.A1}: status: unknown value 'ARCHIVED'")


def test_duplicate_email_in_an_organization(tmp_path, corpus):
    target = _corrupt(tmp_path, corpus, "security/users.json", lambda d: d[C.U2].update(email="ADMIN@example.com"))
    _fails(target, "duplicate email 'ADMIN@example.com' in organization 'org_default'")


def test_wrong_container_and_dangling_org_and_bad_timestamp(tmp_path, corpus):
    target = _corrupt(tmp_path, corpus, "chunks_index.json", text='{"a": 1}')
    _fails(target, "chunks_index.json: expected a list at the top level, got an object")
    target2 = _corrupt(tmp_path / "2", corpus, "security/users.json", lambda d: d[C.U3].update(org_id="org_nowhere"))
    _fails(target2, f"record {C.U3}: org_id: 'org_nowhere' refers to no organization")
    target3 = _corrupt(
        tmp_path / "3", corpus, "conversations.json", lambda d: d[C.C1]["messages"][0].update(timestamp="yesterday")
    )
    _fails(target3, f"conversations.json: record {C.C1}: messages[0].timestamp: not an ISO timestamp")


def test_check_exits_non_zero_and_lists_blocking_problems(tmp_path, corpus):
    target = _corrupt(tmp_path, corpus, "security/users.json", lambda d: d[C.U2].update(status="zombie", email=[]))
    message = _fails(target, "problem(s) would block the import", check=True)
    assert message


@pytest.mark.django_db(transaction=True)  # the backup tools read what is committed
def test_backup_is_written_before_the_import(corpus, settings, tmp_path):
    settings.BACKUP_DIR = str(tmp_path)
    root, _ = corpus
    output = run_import(root, backup=True)
    [written] = [
        line.removeprefix("Backup written to ") for line in output.splitlines() if line.startswith("Backup written to ")
    ]
    assert [p.name for p in tmp_path.iterdir()] == [Path(written).name]
    assert Path(written).stat().st_size > 0
    assert User.all_orgs.count() > 0  # and the import went on
