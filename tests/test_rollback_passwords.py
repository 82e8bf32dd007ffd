"""A rollback never locks users out: every password hash handed back to AgentForge (export_json,
the dual-write store) verifies with AgentForge's own scheme while the move is not final."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import get_hasher
from django.test import override_settings

from accounts.models import Organization, User
from accounts.services import change_password
from accounts.tokens import issue_password_reset_token, reset_password
from legacy.store.db_store import DatabaseStore
from tests import legacy_corpus as C
from tests.agentforge_real import agentforge_backup_code_matches, agentforge_verify
from tests.hashers import quick_password_hashers
from tests.legacy_helpers import load_dir, run_export, run_import

pytestmark = pytest.mark.django_db

FINAL = override_settings(LEGACY_ROLLBACK_POSSIBLE=False, PASSWORD_HASHERS=quick_password_hashers(False))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, C.write_corpus(root)


@pytest.fixture
def imported(corpus):
    root, facts = corpus
    run_import(root, verbosity=0)
    return facts


def _exported_users(tmp_path) -> dict:
    run_export(tmp_path / "out")
    return load_dir(tmp_path / "out")["security/users.json"]


def _sign_in(email, password):
    return authenticate(email=email, password=password, org=Organization.get_default())


def test_after_sign_in_the_exported_hash_still_verifies_in_agentforge(imported, tmp_path):
    password = imported["passwords"][C.U1]
    user = _sign_in("admin@example.com", password)
    assert user is not None
    user.refresh_from_db()
    # the sign-in upgraded the 100,000-iteration legacy hash, and stayed PBKDF2
    assert user.password.startswith(f"pbkdf2_sha256${get_hasher('pbkdf2_sha256').iterations}$")
    exported = _exported_users(tmp_path)[C.U1]["password_hash"]
    assert agentforge_verify(password, exported)
    assert not agentforge_verify(password + "x", exported)


def test_the_dual_write_store_hands_agentforge_a_verifiable_hash_after_sign_in(imported):
    password = imported["passwords"][C.U2]
    User.all_orgs.filter(legacy_id=C.U2).update(status=User.Status.ACTIVE)
    assert _sign_in("pending@example.com", password) is not None
    record = DatabaseStore().get("security/users", C.U2)
    assert agentforge_verify(password, record["password_hash"])


def test_password_change_and_its_history_verify_in_agentforge(imported, tmp_path):
    user = User.all_orgs.get(legacy_id=C.U1)
    old = imported["passwords"][C.U1]
    change_password(user, "a brand new password 1")
    exported = _exported_users(tmp_path)[C.U1]
    assert agentforge_verify("a brand new password 1", exported["password_hash"])
    assert not agentforge_verify(old, exported["password_hash"])
    # AgentForge's history check verifies the new password against each entry: the superseded one is there
    assert any(agentforge_verify(old, entry) for entry in exported["password_history"])
    assert agentforge_verify(imported["history_plain"], exported["password_history"][0])


def test_password_reset_verifies_in_agentforge(imported, tmp_path):
    user = User.all_orgs.get(legacy_id=C.U4)
    token = issue_password_reset_token(user)
    assert reset_password(token, "reset to this password 4") is not None
    run_export(tmp_path / "out")
    exported = load_dir(tmp_path / "out")["security/users.json"][C.U4]["password_hash"]
    assert agentforge_verify("reset to this password 4", exported)


def test_a_user_created_through_django_verifies_in_agentforge(imported, tmp_path):
    user = User.objects.create_user("made.here@example.com", "made in django 1", org=Organization.get_default())
    exported = _exported_users(tmp_path)[str(user.pk)]["password_hash"]
    assert agentforge_verify("made in django 1", exported)


def test_backup_codes_verify_in_agentforge_after_export(imported, tmp_path):
    codes = _exported_users(tmp_path)[C.U1]["mfa"]["backup_codes"]
    assert agentforge_backup_code_matches(
        imported["backup_code"].lower()[:4] + "-" + imported["backup_code"][4:], codes
    )
    assert not agentforge_backup_code_matches("ZZZZ9999", codes)


def test_once_final_bcrypt_takes_over_on_the_next_sign_in(imported):
    password = imported["passwords"][C.U1]
    with FINAL:
        assert _sign_in("admin@example.com", password) is not None
        user = User.all_orgs.get(legacy_id=C.U1)
        assert user.password.startswith("bcrypt_sha256$")
        assert _sign_in("admin@example.com", password) is not None


def test_a_bcrypt_hash_returns_to_pbkdf2_on_sign_in_while_rollback_is_possible(imported, tmp_path):
    """A user re-hashed with bcrypt (by an earlier version) gets an exportable hash back by signing in."""
    password = imported["passwords"][C.U1]
    with FINAL:
        _sign_in("admin@example.com", password)
    assert User.all_orgs.get(legacy_id=C.U1).password.startswith("bcrypt_sha256$")
    out = tmp_path / "before"
    from io import StringIO

    from django.core.management import call_command

    stderr = StringIO()
    call_command("export_json", str(out), stdout=StringIO(), stderr=stderr)
    assert "1 user(s) have a password AgentForge cannot verify" in stderr.getvalue()
    assert _sign_in("admin@example.com", password) is not None
    assert agentforge_verify(password, _exported_users(tmp_path)[C.U1]["password_hash"])


def test_live_json_files_refuse_a_final_move_at_start_up():
    base = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL", "SQLITE"))}
    env.update(
        ENV_FILE="",
        DJANGO_SETTINGS_MODULE="agentforge_site.settings",
        SECRET_KEY="x" * 50,
        ENCRYPTION_KEY="dGVzdC1rZXktb25lLWZvci1hZ2VudGZvcmdlLXRlc3Q=",
        STORAGE_MODE="dual",
        LEGACY_ROLLBACK_POSSIBLE="false",
    )
    result = subprocess.run(
        [sys.executable, str(base / "manage.py"), "check"],
        env=env,
        cwd=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "configuration error: LEGACY_ROLLBACK_POSSIBLE: cannot be false while "
        "STORAGE_MODE is dual (the JSON files are live)"
    )
