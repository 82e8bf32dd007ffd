"""Records AgentForge must load after a rollback, and the cases its own code handled:
invitations (a required token), a directory without organizations.json, sign-in by status."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import authenticate
from django.core.management.base import CommandError
from django.urls import reverse

from accounts.backends import login_refusal
from accounts.models import Organization, User
from agentforge_agents.models import Agent
from agentforge_core.crypto import sha256_hex
from agentforge_core.tenancy import unscoped
from legacy.models import LegacyRecord
from tests import legacy_corpus as C
from tests.legacy_helpers import load_dir, run_export, run_import, run_parity

pytestmark = pytest.mark.django_db

INVITATION = "abababab-0000-4000-8000-000000000001"
TOKEN = "0123456789abcdef0123456789abcdef"


# --- invitations ------------------------------------------------------------------------------------


def test_invitation_token_is_encrypted_at_rest_and_exported_as_it_was(tmp_path):
    C.write_corpus(tmp_path / "in")
    run_import(tmp_path / "in", verbosity=0)
    row = LegacyRecord.all_orgs.get(collection="security/invitations", legacy_id=INVITATION)
    assert TOKEN not in json.dumps(row.data) and row.data["token_sha256"] == sha256_hex(TOKEN)
    from django.db import connection

    # Raw SQL with no organization active sees no tenant row under row-level security.
    with unscoped(), connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM legacy_records WHERE legacy_id = %s", [INVITATION])
        assert cursor.fetchone()[0].startswith("fernet$")
    run_export(tmp_path / "out")
    exported = load_dir(tmp_path / "out")["security/invitations.json"][INVITATION]
    original = json.loads((tmp_path / "in" / "security" / "invitations.json").read_text(encoding="utf-8"))[INVITATION]
    assert exported == original


def test_parity_is_clean_and_a_repair_writes_invitations_agentforge_loads(tmp_path):
    C.write_corpus(tmp_path / "in")
    run_import(tmp_path / "in", verbosity=0)
    assert run_parity(tmp_path / "in", "--collection", "security/invitations") == (
        0,
        "No drift: 1 collection(s) match.\n",
    )
    path = tmp_path / "in" / "security" / "invitations.json"
    path.write_text("{}", encoding="utf-8")  # a lost JSON side
    assert run_parity(tmp_path / "in", "--collection", "security/invitations")[0] == 1
    assert run_parity(tmp_path / "in", "--collection", "security/invitations", "--fix-from", "db")[0] == 0
    assert json.loads(path.read_text(encoding="utf-8"))[INVITATION]["token"] == TOKEN


def test_an_invitation_kept_only_as_a_hash_exports_a_token_no_old_link_matches(tmp_path):
    """Rows imported before tokens were kept encrypted: AgentForge requires a string token; the
    export gives a stable one that is neither the old token nor its hash."""
    C.write_corpus(tmp_path / "in")
    run_import(tmp_path / "in", verbosity=0)
    LegacyRecord.all_orgs.filter(collection="security/invitations").update(secret=None)
    run_export(tmp_path / "a")
    run_export(tmp_path / "b")
    token = load_dir(tmp_path / "a")["security/invitations.json"][INVITATION]["token"]
    assert isinstance(token, str) and len(token) == 32
    assert token not in (TOKEN, sha256_hex(TOKEN))
    assert load_dir(tmp_path / "b")["security/invitations.json"][INVITATION]["token"] == token


# --- a directory without security/organizations.json --------------------------------------------------


def _app_only_directory(root):
    files, _ = C.build_corpus()
    for relative in ("agents.json", "lab/99999999-0000-4000-8000-00000000000a.json"):
        data = files[relative]
        if relative == "agents.json":
            data = {k: {**v, "owner_id": None, "created_by": None} for k, v in data.items()}
        C.dump(root / relative, data, relative)


def test_without_organizations_json_the_default_organization_is_created_as_agentforge_did(tmp_path):
    _app_only_directory(tmp_path / "in")
    output = run_import(tmp_path / "in")
    assert "created org_default as AgentForge does on first start" in output
    org = Organization._base_manager.get(legacy_id="org_default")
    assert (org.name, org.slug, org.allowed_auth_providers) == (
        "Default Organization",
        "default",
        ["local", "google", "microsoft"],
    )
    assert Agent.all_orgs.filter(org=org).count() == 2
    run_export(tmp_path / "out")
    exported = load_dir(tmp_path / "out")["security/organizations.json"]["org_default"]
    assert exported["max_users"] == 100 and exported["status"] == "active" and exported["domain"] is None
    # a second run finds it in the database and changes nothing
    from tests.legacy_helpers import rerun_changes_nothing

    rerun_changes_nothing(tmp_path / "in")


def test_organizations_json_without_the_default_one_stops_with_one_line(tmp_path):
    _app_only_directory(tmp_path / "in")
    other = {
        "org_abc123def456": {
            **C.build_corpus()[0]["security/organizations.json"]["org_abc123def456"],
            "ldap_config_id": None,
        }
    }
    C.dump(tmp_path / "in" / "security/organizations.json", other, "security/organizations.json")
    with pytest.raises(CommandError) as excinfo:
        run_import(tmp_path / "in")
    assert str(excinfo.value) == (
        f"agents.json: record {C.A1}: org_id: none given, and the default organization 'org_default' "
        "is neither in security/organizations.json nor in the database"
        " (nothing was imported: the transaction was rolled back)"
    )
    assert not Agent.all_orgs.exists()


# --- sign-in by status -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, message",
    [
        (User.Status.PENDING, "Please verify your email first."),
        (User.Status.SUSPENDED, "Account suspended. Contact administrator."),
        (User.Status.INACTIVE, "This account is inactive. Contact administrator."),
    ],
)
def test_refused_statuses_get_agentforge_answer_only_with_the_right_password(make_org, make_user, status, message):
    org = make_org()
    user = make_user(org, email="someone@example.com", password="the right one 1")
    User.all_orgs.filter(pk=user.pk).update(status=status)
    assert authenticate(email="someone@example.com", password="the right one 1") is None
    assert login_refusal.get() == message
    # a wrong password, and an unknown email, get no reason: the same answer for both
    assert authenticate(email="someone@example.com", password="wrong") is None
    assert login_refusal.get() is None
    assert authenticate(email="nobody@example.com", password="wrong") is None
    assert login_refusal.get() is None
    user.refresh_from_db()
    assert user.failed_login_attempts == 1  # the wrong password counted, the refused right one did not


def test_verifying_the_email_lets_a_pending_user_in(make_org, make_user):
    from accounts.tokens import issue_verification_token, verify_email

    org = make_org()
    user = make_user(org, email="new@example.com", password="pending user pw 1", status=User.Status.PENDING)
    assert authenticate(email="new@example.com", password="pending user pw 1") is None
    verify_email(issue_verification_token(user))
    assert authenticate(email="new@example.com", password="pending user pw 1") == user


def test_admin_login_shows_the_reason(client, make_org, make_user):
    org = make_org()
    make_user(org, email="staff@example.com", password="staff password 1", is_staff=True, status=User.Status.PENDING)
    url = reverse("admin:login")
    right = client.post(url, {"username": "staff@example.com", "password": "staff password 1"})
    assert right.status_code == 200 and "Please verify your email first." in right.content.decode()
    wrong = client.post(url, {"username": "staff@example.com", "password": "nope"})
    assert "Please verify your email first." not in wrong.content.decode()
    assert "Please enter the correct email and password" in wrong.content.decode()
