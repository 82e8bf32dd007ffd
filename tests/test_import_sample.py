"""import_json on the real committed sample (legacy-sample/security)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.hashers import identify_hasher

from accounts.models import MFASettings, Organization, Permission, Role, RolePermission, User, UserRole
from agentforge_core.tenancy import unscoped
from legacy.format import passwords
from security.models import AuditLog
from settings_app.models import OrgSetting, SystemSetting
from tests.legacy_helpers import SAMPLE, dump, rerun_changes_nothing, run_import

pytestmark = pytest.mark.django_db


def test_sample_imports_with_exact_counts():
    output = run_import(SAMPLE)
    assert Organization.all_orgs.count() == 1
    assert User.all_orgs.count() == 5
    assert Role.all_orgs.count() == 5
    assert Permission.objects.count() == 31
    assert RolePermission.all_orgs.count() == 31 + 26 + 17 + 6 + 3
    assert UserRole.all_orgs.count() == 5
    assert MFASettings.all_orgs.count() == 5
    assert AuditLog.all_orgs.count() == 29
    assert OrgSetting.all_orgs.count() == 45  # 47 keys minus id and org_id
    assert SystemSetting.objects.get(key="security.tenancy_mode").value == "single"
    assert "users" in output and "created" in output
    counts = dict(
        AuditLog.all_orgs.values_list("legacy_action").annotate(
            n=__import__("django.db.models", fromlist=["Count"]).Count("id")
        )
    )
    assert counts == {"login": 22, "logout": 2, "login_failed": 2, "create": 2, "update": 1}


def test_sample_ids_are_deterministic_and_legacy_ids_kept():
    run_import(SAMPLE, verbosity=0)
    org = Organization.all_orgs.get(legacy_id="org_default")
    assert org == Organization.get_default()
    admin = User.all_orgs.get(email="admin@agentforge.to")
    assert str(admin.pk) == admin.legacy_id == "85900a07-fe70-473b-99d2-795a46862009"
    assert UserRole.all_orgs.get(user=admin).role.legacy_id == "role_super_admin"
    super_admin = Role.all_orgs.get(legacy_id="role_super_admin")
    assert "system:admin" in super_admin.effective_permissions()


def test_sample_password_hashes_convert_losslessly():
    run_import(SAMPLE, verbosity=0)
    raw = json.loads((SAMPLE / "security/users.json").read_text())
    for user in User.all_orgs.all():
        legacy = raw[user.legacy_id]["password_hash"]
        if legacy is None:
            assert not user.has_usable_password()
            continue
        assert identify_hasher(user.password).algorithm == "pbkdf2_sha256"
        two_part = set(user.legacy_extra.get("__two_part_salts__", []))
        assert passwords.to_legacy(user.password, two_part) == legacy
        assert not user.check_password("wrong password")
    two_part_users = [u.email for u in User.all_orgs.all() if u.legacy_extra.get("__two_part_salts__")]
    assert sorted(two_part_users) == ["admin@agentforge.to", "ahamdi.hussein@gmail.com"]


def test_sample_stale_secrets_stay_dead():
    run_import(SAMPLE, verbosity=0)
    for mfa in MFASettings.all_orgs.select_related("user"):
        assert not mfa.is_active
        assert mfa.email_code_hash is None  # the stale "283299" is not a valid code
    with_secret = MFASettings.all_orgs.filter(totp_secret__isnull=False).count()
    assert with_secret == 2  # kept (encrypted), MFA still off
    verified = User.all_orgs.filter(email_verified=True)
    assert all(u.verification_token_hash is None for u in verified)
    assert all(u.reset_password_token_hash is None for u in User.all_orgs.all())  # expired in January
    pending = User.all_orgs.get(email="ahmedhamdi81@yahoo.com")
    assert pending.verification_token_hash is not None and len(pending.verification_token_hash) == 64


def test_sample_totp_secret_is_encrypted_at_rest():
    from django.db import connection

    run_import(SAMPLE, verbosity=0)
    with unscoped(), connection.cursor() as cursor:
        cursor.execute("SELECT totp_secret FROM mfa_settings WHERE totp_secret IS NOT NULL")
        stored = [row[0] for row in cursor.fetchall()]
    assert stored and all(value.startswith("fernet$") for value in stored)


def test_sample_rerun_and_skip_existing_change_nothing():
    run_import(SAMPLE, verbosity=0)
    assert "unchanged" in rerun_changes_nothing(SAMPLE)


def test_sample_dry_run_writes_nothing():
    before = dump()
    output = run_import(SAMPLE, dry_run=True)
    assert "DRY RUN" in output
    assert dump() == before
    assert User.all_orgs.count() == 0


def test_sample_audit_chain_verifies():
    from security.audit import verify_all

    run_import(SAMPLE, verbosity=0)
    reports = verify_all()
    assert reports and all(r.ok for r in reports)
    assert sum(r.checked for r in reports) == 29
