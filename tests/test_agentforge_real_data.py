"""Data directories written by AgentForge's own code (tests/fixtures/agentforge, both eras):
imported, signed in as AgentForge allows, kept in parity, and rolled back so AgentForge still
signs everyone in."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import check_password
from django.utils import timezone

from accounts.backends import login_refusal
from accounts.models import Department, Group, MFASettings, Organization, Role, User
from accounts.services import change_password
from agentforge_agents.models import Agent, Tool, ToolPermission
from conversations.models import Conversation, Message
from knowledge.models import Document
from legacy.models import LegacyRecord
from legacy.store import DualStore
from security.models import AuditLog
from tests.agentforge_real import (
    agentforge_backup_code_matches,
    agentforge_verify,
    audit_entry_problems,
    nullable_fields,
)
from tests.legacy_helpers import load_dir, rerun_changes_nothing, run_export, run_import, run_parity

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "agentforge"
ERAS = ["first-57dc2c9", "last-json-effb5d0"]
NULLABLE = nullable_fields()
# AgentForge's answers (credentials.json, "agentforge_login") and ours for the same password.
REFUSALS = {
    "Please verify your email first": "Please verify your email first.",
    "Account suspended. Contact administrator": "Account suspended. Contact administrator.",
}
INACTIVE = "This account is inactive. Contact administrator."


@pytest.fixture(params=ERAS)
def era(request, tmp_path):
    """A writable copy of one era's directory, and its credentials."""
    target = tmp_path / request.param
    shutil.copytree(FIXTURES / request.param, target)
    credentials = json.loads((target / "credentials.json").read_text(encoding="utf-8"))
    return target, credentials


@pytest.fixture
def imported(era):
    root, credentials = era
    run_import(root, verbosity=0)
    return root, credentials


def _file(root, relative):
    path = root / relative
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _sign_in(email, password):
    user = authenticate(email=email, password=password)
    return user, login_refusal.get()


def test_check_reports_nothing_blocking(era):
    root, _ = era
    output = run_import(root, check=True)
    assert "blocking" not in output
    assert not User.all_orgs.exists()


def test_counts_equal_the_records_agentforge_wrote(imported):
    root, _ = imported
    expected = {
        Organization: "security/organizations.json",
        User: "security/users.json",
        Role: "security/roles.json",
        Department: "security/departments.json",
        Group: "security/groups.json",
        ToolPermission: "security/tool_permissions.json",
        Agent: "agents.json",
        Tool: "tools.json",
        Conversation: "conversations.json",
    }
    for model, relative in expected.items():
        data = _file(root, relative) or {}
        assert model._base_manager.count() == len(data), relative
    for collection in (
        "security/invitations",
        "security/policies",
        "security/kb_permissions",
        "security/db_permissions",
    ):
        assert LegacyRecord.all_orgs.filter(collection=collection).count() == len(_file(root, f"{collection}.json"))
    assert AuditLog.all_orgs.filter(legacy_id__isnull=False).count() == len(_file(root, "security/audit_logs.json"))
    assert Document.all_orgs.filter(source=Document.Source.UPLOAD).count() == len(_file(root, "documents.json"))
    assert Document.all_orgs.filter(source=Document.Source.WEB).count() == len(_file(root, "scraped_pages.json"))
    conversations = _file(root, "conversations.json")
    assert Message.all_orgs.count() == sum(len(c["messages"]) for c in conversations.values())
    assert Message.all_orgs.count() > 0


def test_sign_in_follows_agentforge(imported):
    _, credentials = imported
    checked = 0
    for email, facts in credentials["users"].items():
        password = facts.get("password")
        if password is None:  # the Google user has no password
            assert _sign_in(email, "anything")[0] is None
            continue
        answer = facts["agentforge_login"]
        if answer["status"] == 423:
            # Leo, locked by AgentForge after 5 wrong passwords for 30 minutes: refused while the lock
            # lasts (the same answer as a wrong password here), let in once it has passed, as there.
            leo = User.all_orgs.get(email_normalized=email)
            assert leo.status == User.Status.LOCKED and leo.failed_login_attempts == 5 and leo.locked_until
            User.all_orgs.filter(pk=leo.pk).update(locked_until=timezone.now() + dt.timedelta(minutes=5))
            assert _sign_in(email, password) == (None, None), email
            User.all_orgs.filter(pk=leo.pk).update(locked_until=timezone.now() - dt.timedelta(seconds=1))
        user, refusal = _sign_in(email, password)
        if answer["status"] == 200 and "deactivated" in (facts.get("note") or ""):
            # AgentForge's login lets an inactive user in, then refuses every request it makes
            # (get_current_user wants status active): here the sign-in itself is refused.
            assert user is None and refusal == INACTIVE, email
        elif answer["status"] == 423:
            assert user is not None and refusal is None and user.status == User.Status.ACTIVE, email
        elif answer["status"] == 200:
            assert user is not None and user.email == email and refusal is None, email
        else:
            assert user is None and refusal == REFUSALS[answer["detail"]], email
        for previous in facts.get("previous_passwords", []):
            assert _sign_in(email, previous) == (None, None), email
        assert _sign_in(email, password + "x") == (None, None), email
        checked += 1
    assert checked == 11


def test_mfa_totp_and_backup_codes(imported):
    _, credentials = imported
    bob_facts = credentials["users"]["bob.builder@acme.example"]
    bob = MFASettings.all_orgs.get(user__email_normalized="bob.builder@acme.example")
    assert bob.is_active and bob.totp_secret == bob_facts["totp_secret"]
    # In AgentForge's order, so each code is checked against its own hash (each check is a
    # full PBKDF2 verification).
    assert len(bob.backup_codes) == len(bob_facts["backup_codes"])
    for code, stored in zip(bob_facts["backup_codes"], bob.backup_codes):
        assert check_password(code, stored)
    assert not any(check_password("00000000", stored) for stored in bob.backup_codes)
    ivan = MFASettings.all_orgs.get(user__email_normalized="ivan.ivanov@acme.example")
    assert ivan.totp_secret == credentials["users"]["ivan.ivanov@acme.example"]["totp_secret_unfinished"]
    assert not ivan.is_active  # an unfinished enrolment does not become MFA


def test_second_import_changes_nothing(imported):
    root, _ = imported
    rerun_changes_nothing(root)


def test_verify_parity_is_clean_right_after_the_import(imported):
    root, _ = imported
    status, output = run_parity(root)
    assert status == 0, output


def _same_shape(relative, key, original: dict, exported: dict, prefix="") -> int:
    """Every field of ``original`` is in ``exported`` with the same JSON type, or null where
    AgentForge's model allows null; returns the number of fields checked."""
    checked = 0
    for field, value in original.items():
        dotted = prefix + field
        where = f"{relative}: {key}: {dotted}"
        assert field in exported, f"{where} missing"
        got = exported[field]
        if got is None:
            assert value is None or dotted in NULLABLE.get(relative, ()), f"{where}: null, AgentForge requires a value"
        elif value is not None:
            assert type(got) is type(value), f"{where}: {got!r} vs {value!r}"
            if isinstance(value, dict) and relative == "security/users.json" and not prefix:
                checked += _same_shape(relative, key, value, got, dotted + ".")
        checked += 1
    return checked


def test_export_loads_in_agentforge_shapes(imported, tmp_path):
    """Every field AgentForge wrote comes back with a value of the same JSON type, null only where
    its model allows it: its loaders accept every exported record."""
    root, credentials = imported
    run_export(tmp_path / "out")
    original, exported = load_dir(root), load_dir(tmp_path / "out")
    original.pop("credentials.json")
    checked = 0
    for relative, data in original.items():
        if relative in ("settings.json", "integrations.json", "security/settings.json"):
            assert exported[relative] == data, relative
            continue
        if isinstance(data, list):
            assert len(exported[relative]) == len(data), relative
            data = dict(enumerate(data))
            exported[relative] = dict(enumerate(exported[relative]))
        for key, record in data.items():
            checked += _same_shape(relative, key, record, exported[relative][key])
    assert checked > 1000
    # the pending invitations still work after the rollback: their tokens come back
    invitations = exported["security/invitations.json"]
    for facts in credentials["invitations"].values():
        assert invitations[facts["id"]]["token"] == facts["token"]


def test_full_rollback_after_sign_ins_and_password_changes(imported, tmp_path):
    root, credentials = imported
    users = credentials["users"]
    passwords = {email: f["password"] for email, f in users.items() if f.get("password")}
    for email, password in passwords.items():
        _sign_in(email, password)  # sign-ins upgrade the stored hashes
    _sign_in("henry.accepts@acme.example", "a wrong password")
    _sign_in("nobody@acme.example", "a wrong password")  # entries of our own, without a user
    carol = User.all_orgs.get(email_normalized="carol.creator@acme.example")
    change_password(carol, "Carol after the move 3")
    passwords["carol.creator@acme.example"] = "Carol after the move 3"
    run_export(tmp_path / "rollback")
    exported = {u["email"]: u for u in _file(tmp_path / "rollback", "security/users.json").values()}
    assert set(passwords) <= set(exported)
    for email, password in passwords.items():
        assert agentforge_verify(password, exported[email]["password_hash"]), email
    assert not agentforge_verify(
        users["carol.creator@acme.example"]["password"], exported["carol.creator@acme.example"]["password_hash"]
    )
    bob = exported["bob.builder@acme.example"]["mfa"]
    assert all(
        agentforge_backup_code_matches(code, bob["backup_codes"])
        for code in users["bob.builder@acme.example"]["backup_codes"]
    )
    assert exported["gina.google@gmail.com"]["password_hash"] is None
    # the audit trail, with the entries written here since the import, loads in AgentForge's model
    entries = _file(tmp_path / "rollback", "security/audit_logs.json")
    assert len(entries) > len(_file(root, "security/audit_logs.json"))
    assert {e["id"]: audit_entry_problems(e) for e in entries if audit_entry_problems(e)} == {}


@pytest.mark.django_db(transaction=True)
def test_dual_mode_saves_agentforge_shaped_records_and_stays_inrun_parity(imported):
    root, _ = imported
    store = DualStore(root)
    agents = _file(root, "agents.json")
    agent = dict(next(iter(agents.values())))
    agent["name"] = "Renamed in dual mode"
    store.save("agents", agent)
    users = _file(root, "security/users.json")
    user = json.loads(json.dumps(next(u for u in users.values() if u["email"] == "henry.accepts@acme.example")))
    user["profile"]["first_name"] = "Hénri"
    store.save("security/users", user)
    store.flush()  # the files follow the database within DUAL_WRITE_DELAY; now, for the test
    assert _file(root, "agents.json")[agent["id"]]["name"] == "Renamed in dual mode"
    assert _file(root, "security/users.json")[user["id"]]["profile"]["first_name"] == "Hénri"
    status, output = run_parity(root)
    assert status == 0, output


@pytest.mark.django_db(transaction=True)
def test_deleting_an_agent_in_dual_mode_drops_its_conversations_on_both_sides(imported):
    root, credentials = imported
    conversations = _file(root, "conversations.json")
    agent_id = next(c["agent_id"] for c in conversations.values() if c.get("agent_id") in _file(root, "agents.json"))
    theirs = [k for k, c in conversations.items() if c.get("agent_id") == agent_id]
    assert theirs
    store = DualStore(root)
    assert store.delete("agents", agent_id) is True
    store.flush()
    assert not Conversation.all_orgs.filter(legacy_id__in=theirs).exists()
    left = _file(root, "conversations.json")
    assert not set(theirs) & set(left) and len(left) == len(conversations) - len(theirs)
    status, output = run_parity(root)
    assert status == 0, output
