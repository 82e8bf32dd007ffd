"""Shapes AgentForge writes after a restart with its database up (commit ``effb5d0``).

``SecurityState.load_from_disk`` (core/security/state.py) loads users, roles, organizations,
invitations, departments, groups and the last 1,000 audit entries from the database, then every
``save_to_disk`` writes them back to ``security/*.json`` as the ``_db_to_core_*`` converters of
``database/services/`` built them. Wave 3 covers the first save with the database up; these are
what the converters change once the records have been through the database:

- ``UserService._db_to_core_user``: ``org_id`` is ``""`` when the row has no organization (an
  organization whose id is not a UUID, such as ``org_<12 hex>``, is never saved:
  ``OrganizationService.save_organization`` raises, so its users get ``org_id`` NULL); MFA comes
  back as ``methods: [<the one DB method>]``, ``totp_verified`` = ``mfa_enabled``,
  ``backup_codes: []``, ``totp_secret`` NULL unless enabled.
- ``RoleService._db_to_core_role``: ``org_id`` ``""`` likewise, ``description`` ``""``.
- ``InvitationService._db_to_core_invitation``: ``invited_by`` is ``str(None)``, the text
  ``"None"``, when the column is NULL.
- ``AuditService.get_all_audit_logs``: newest first (``order_by(timestamp.desc())``); new entries
  are appended after them. ``_db_to_core_log`` writes ``""`` for a missing user, copies the
  ``description`` column into ``details`` and ``ip_address`` ``""`` (the column is NOT NULL and
  ``save_audit_log`` stores ``log.ip_address or ''``).
"""

from __future__ import annotations

import pytest
from django.contrib.auth import authenticate
from django.core.management.base import CommandError

from accounts.models import MFASettings, Organization, Role, User
from agentforge_agents.models import Agent
from security.models import AuditLog
from tests.agentforge_real import agentforge_verify, credentials
from tests.legacy_helpers import rerun_changes_nothing, run_export, run_import
from tests.test_agentforge_formats_wave3 import DB_ORG, _database_up, _late_copy, _read, _write

pytestmark = pytest.mark.django_db

SECOND_ORG = "org_1e950518df95"  # the late fixture's second organization (not a UUID)


@pytest.fixture
def restarted(tmp_path):
    """The late era's security files after a restart with the database up (module docstring)."""
    root = _late_copy(tmp_path)
    _database_up(root)
    return root


def _users(root):
    return _read(root, "security/users.json")


def _user(root, email):
    return next(u for u in _users(root).values() if u["email"] == email)


def _put_users(root, users):
    _write(root, "security/users.json", users, False)


def _drop_second_org(root):
    """The organization whose id is no UUID never reached the database: after a restart it is
    gone from organizations.json and its user has ``org_id: ""`` (UserService._db_to_core_user)."""
    organizations = _read(root, "security/organizations.json")
    del organizations[SECOND_ORG]
    _write(root, "security/organizations.json", organizations, False)
    users = _users(root)
    for user in users.values():
        if user["org_id"] == SECOND_ORG:
            user["org_id"] = ""
    _put_users(root, users)
    for name in ("roles", "departments", "groups", "invitations", "policies", "tool_permissions"):
        relative = f"security/{name}.json"
        records = _read(root, relative)
        for record in records.values():
            if record.get("org_id") == SECOND_ORG:
                record["org_id"] = ""
        _write(root, relative, records, False)
    settings = _read(root, "security/settings.json")
    settings["settings"].pop(SECOND_ORG, None)
    _write(root, "security/settings.json", settings, False)
    logs = _read(root, "security/audit_logs.json")
    logs = [entry for entry in logs if entry["org_id"] != SECOND_ORG]
    _write(root, "security/audit_logs.json", logs, False)


# --- org_id "" ----------------------------------------------------------------------------------


def test_a_user_without_an_organization_imports_signs_in_and_exports_as_written(restarted, tmp_path):
    """AgentForge signs this user in (``get_user_by_email(email, None)`` matches any org_id), so
    the import must take her, into the organization AgentForge's records default to, and the
    export must give ``org_id: ""`` back."""
    _drop_second_org(restarted)
    olga = _user(restarted, "olga.globex@globex.example")
    assert olga["org_id"] == ""
    run_import(restarted, verbosity=0)
    assert User.all_orgs.get(legacy_id=olga["id"]).org.legacy_id == "org_default"
    rerun_changes_nothing(restarted)
    run_export(tmp_path / "out")
    assert _read(tmp_path / "out", "security/users.json")[olga["id"]] == olga
    # she signs in here (her hash is re-written), and AgentForge still signs her in after a rollback
    password = credentials("last-json-effb5d0")["users"]["olga.globex@globex.example"]["password"]
    assert authenticate(email=olga["email"], password=password) is not None
    run_export(tmp_path / "again")
    exported = _read(tmp_path / "again", "security/users.json")[olga["id"]]
    assert exported["org_id"] == ""
    assert agentforge_verify(password, exported["password_hash"])


def test_a_role_without_an_organization_keeps_org_id_empty(restarted, tmp_path):
    """``RoleService._db_to_core_role``: ``org_id`` ``""`` and ``description`` ``""``."""
    roles = _read(restarted, "security/roles.json")
    role = next(r for r in roles.values() if not r["is_system"])
    role.update(org_id="", description="")
    _write(restarted, "security/roles.json", roles, False)
    run_import(restarted, verbosity=0)
    assert Role.all_orgs.get(legacy_id=role["id"]).org.legacy_id == "org_default"
    run_export(tmp_path / "out")
    assert _read(tmp_path / "out", "security/roles.json")[role["id"]] == role


# --- MFA as the database gives it back ------------------------------------------------------------


def test_email_mfa_from_the_database_round_trips(restarted, tmp_path):
    """``_db_to_core_user`` for ``mfa_method = 'email'``: enabled, ``methods: ['email']``,
    ``totp_verified`` true (it copies ``mfa_enabled``), no secret, no backup codes."""
    users = _users(restarted)
    carol = next(u for u in users.values() if u["email"] == "carol.creator@acme.example")
    carol["mfa"].update(
        enabled=True,
        methods=["email"],
        totp_secret=None,
        totp_verified=True,
        backup_codes=[],
        email_code=None,
        email_code_expires="2026-02-01T10:10:00.000001",
        last_used="2026-02-01T10:00:30.270391",
    )
    _put_users(restarted, users)
    run_import(restarted, verbosity=0)
    mfa = MFASettings.all_orgs.get(user__legacy_id=carol["id"])
    assert mfa.enabled and mfa.methods == ["email"]
    run_export(tmp_path / "out")
    assert _read(tmp_path / "out", "security/users.json")[carol["id"]] == carol


def test_totp_mfa_from_the_database_keeps_the_secret_and_no_backup_codes(restarted, tmp_path):
    users = _users(restarted)
    bob = next(u for u in users.values() if u["email"] == "bob.builder@acme.example")
    bob["mfa"].update(backup_codes=[], email_code=None, email_code_expires=None)
    _put_users(restarted, users)
    run_import(restarted, verbosity=0)
    run_export(tmp_path / "out")
    assert _read(tmp_path / "out", "security/users.json")[bob["id"]] == bob


# --- invitations and audit entries from the database ----------------------------------------------


def test_an_invitation_whose_inviter_is_null_in_the_database(restarted, tmp_path):
    """``_db_to_core_invitation`` writes ``invited_by=str(db_inv.invited_by)``: ``"None"``."""
    invitations = _read(restarted, "security/invitations.json")
    invitation = next(i for i in invitations.values() if i["accepted_at"] is None)
    invitation["invited_by"] = "None"
    _write(restarted, "security/invitations.json", invitations, False)
    run_import(restarted, verbosity=0)
    run_export(tmp_path / "out")
    assert _read(tmp_path / "out", "security/invitations.json")[invitation["id"]] == invitation


def _database_audit(root):
    """The audit list after a restart: what the database gave back, newest first, then the
    entries this process added (oldest first), as ``_db_to_core_log`` builds them."""
    logs = _read(root, "security/audit_logs.json")
    loaded, added = logs[:30], logs[30:]
    for entry in loaded:
        entry["request_id"] = None
        entry["ip_address"] = entry["ip_address"] or ""
        entry["details"] = {**(entry["details"] or {}), "description": ""}
        if entry["org_id"] == "org_default":
            entry["org_id"] = DB_ORG
        if entry["user_id"] is None:
            entry["user_id"] = ""
    # a failed sign-in of an unknown e-mail: no user column, so '' for all three
    loaded[0].update(user_id="", user_email="", user_name="", action="login_failed", success=False)
    logs = list(reversed(loaded)) + added
    _write(root, "security/audit_logs.json", logs, False)
    return logs


def test_audit_entries_from_the_database_export_as_written_oldest_first(restarted, tmp_path):
    """Every entry comes back as written; the list comes back oldest first (the order of the
    files AgentForge wrote before its database, and the one its ``[-10000:]`` cut assumes)."""
    logs = _database_audit(restarted)
    output = run_import(restarted, verbosity=2)
    assert "user_id: ''" not in output
    assert AuditLog.all_orgs.count() == len(logs)
    run_export(tmp_path / "out")
    exported = _read(tmp_path / "out", "security/audit_logs.json")
    assert {e["id"]: e for e in exported} == {e["id"]: e for e in logs}
    stamps = [e["timestamp"] for e in exported]
    assert stamps == sorted(stamps)
    rerun_changes_nothing(restarted)


def test_organizations_keep_their_ids_after_the_restart(restarted):
    _drop_second_org(restarted)
    run_import(restarted, verbosity=0)
    assert set(Organization.all_orgs.values_list("legacy_id", flat=True)) == {"org_default", DB_ORG}


def test_org_id_empty_without_org_default_is_one_clear_error(restarted, tmp_path):
    """Bad input stays bad: ``""`` needs ``org_default``; without it, one line naming the file,
    the record and the field, and nothing written."""
    _drop_second_org(restarted)
    olga = _user(restarted, "olga.globex@globex.example")
    organizations = _read(restarted, "security/organizations.json")
    root = tmp_path / "no-default"
    (root / "security").mkdir(parents=True)
    _write(root, "security/organizations.json", {DB_ORG: organizations[DB_ORG]}, False)
    _write(root, "security/users.json", {olga["id"]: olga}, False)
    with pytest.raises(CommandError) as error:
        run_import(root, verbosity=0)
    assert str(error.value) == (
        f"security/users.json: record {olga['id']}: org_id: '' refers to no organization (nor org_default)"
        " (nothing was imported: the transaction was rolled back)"
    )
    assert not Organization.all_orgs.exists() and not User.all_orgs.exists()


# --- agents as the database gives them back -------------------------------------------------------

NIL = "00000000-0000-0000-0000-000000000000"


def test_agents_from_the_database_without_an_owner(restarted, tmp_path):
    """``AgentService._db_to_agent_dict`` writes ``owner_id``/``created_by`` ``""`` for a NULL
    column, and ``save_to_disk`` (api/main.py) saves an agent without an owner under the nil UUID
    (``agent_owner_id or "0000…"``), which comes back as that text. ``""`` is "no owner", as for
    tools: no dangling reference; the nil UUID names no user and is kept as one."""
    agents = _read(restarted, "agents.json")
    first, second = list(agents.values())[:2]
    first.update(owner_id="", created_by="")
    second.update(owner_id=NIL, created_by=NIL)
    _write(restarted, "agents.json", agents, True)
    output = run_import(restarted, verbosity=2)
    assert f"agents.json: record {first['id']}: owner_id" not in output
    assert f"agents.json: record {first['id']}: created_by" not in output
    assert f"agents.json: record {second['id']}: owner_id: '{NIL}' refers to no user" in output
    row = Agent.all_orgs.get(legacy_id=first["id"])
    assert row.owner_id is None and row.created_by_id is None
    run_export(tmp_path / "out")
    exported = _read(tmp_path / "out", "agents.json")
    assert exported[first["id"]] == first
    assert exported[second["id"]] == second
    rerun_changes_nothing(restarted)
