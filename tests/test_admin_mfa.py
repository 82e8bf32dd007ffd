"""The admin's second factor: TOTP or a backup code after the password, enrolment when required."""

from __future__ import annotations

import re
import time

import pytest
from django.contrib import admin
from django.contrib.auth.hashers import check_password
from django.test import Client
from django.urls import URLResolver

from accounts import admin_mfa, mfa
from accounts.models import MFASettings, User
from agentforge_core.crypto import sha256_hex
from legacy.format import passwords as legacy_passwords
from security.models import AuditLog, SecurityEvent
from tests.agentforge_real import agentforge_backup_code_matches, totp

PASSWORD = "correct horse battery staple"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
BACKUP = "A1B2C3D4"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_hashes(settings):
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]


@pytest.fixture
def org(make_org):
    return make_org("Acme")


@pytest.fixture
def staff(org, make_user):
    user = make_user(org, email="admin@acme.test", password=PASSWORD, is_staff=True, is_superuser=True)
    MFASettings.all_orgs.create(
        org=org,
        user=user,
        enabled=True,
        methods=["totp"],
        totp_secret=SECRET,
        totp_verified=True,
        backup_codes=[mfa.hash_backup_code(BACKUP)],
    )
    return user


def password_step(client, email="admin@acme.test", password=PASSWORD):
    return client.post("/admin/login/?next=/admin/accounts/", {"username": email, "password": password})


def code_step(client, code):
    return client.post("/admin/mfa/", {"code": code})


def signed_in(client) -> bool:
    return client.get("/admin/").status_code == 200


def auth_entries(user, action):
    return list(AuditLog.all_orgs.filter(object_pk=str(user.pk), legacy_action=action).order_by("id"))


def test_the_totp_codes_are_rfc_6238_as_agentforge_computes_them():
    for counter in (1, 37037036, 59000000):
        assert mfa.totp_code(SECRET, counter) == totp(SECRET, at=counter * 30)
    assert mfa.matching_counter(SECRET, totp(SECRET, at=1_000_000_000), now=1_000_000_000 + 30) == 1_000_000_000 // 30
    assert mfa.matching_counter(SECRET, totp(SECRET, at=1_000_000_000), now=1_000_000_000 + 90) is None


def test_the_password_alone_does_not_sign_in_a_user_with_totp(staff):
    client = Client()
    response = password_step(client)
    assert response.status_code == 302 and response["Location"] == "/admin/mfa/"
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").headers["Location"] == "/admin/mfa/"
    page = client.get("/admin/mfa/")
    assert page.status_code == 200 and b"admin@acme.test" in page.content
    (password_entry,) = auth_entries(staff, "login")
    assert password_entry.success is False and password_entry.additional_data == {
        "stage": "password",
        "next_step": "verify",
    }
    assert password_entry.session_id == sha256_hex(client.cookies["sessionid"].value)


def test_the_right_totp_code_signs_in_where_the_visitor_was_going_and_is_audited(staff):
    client = Client()
    password_step(client)
    response = code_step(client, totp(SECRET))
    assert response.status_code == 302 and response["Location"] == "/admin/accounts/"
    assert client.session["_auth_user_id"] == str(staff.pk) and signed_in(client)
    assert admin_mfa.PENDING not in client.session
    last = auth_entries(staff, "login")[-1]
    assert last.success is True and last.additional_data == {"mfa_used": True, "mfa_method": "totp"}


def admin_paths():
    """One concrete path per admin URL pattern (sample values for the converters)."""

    def sample(match):
        return "accounts" if match.group(1) == "app_label" else "1"

    def concrete(pattern) -> str:
        text = str(pattern).lstrip("^").rstrip("$")
        text = re.sub(r"\(\?P<(\w+)>[^)]*\)", sample, text)
        return re.sub(r"<(?:\w+:)?(\w+)>", sample, text)

    def walk(patterns, prefix):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns, prefix + concrete(entry.pattern))
            else:
                yield prefix + concrete(entry.pattern), entry.name

    return list(walk(admin.site.get_urls(), "/admin/"))


def test_every_admin_page_sends_a_visitor_who_owes_the_code_to_the_code_step(staff):
    client = Client()
    password_step(client)
    paths = [(path, name) for path, name in admin_paths() if not (name or "").startswith("mfa_")]
    assert len(paths) > 150  # every model's list, add, change, delete and history pages
    wrong = {}
    for path, name in paths:
        response = client.get(path)
        if response.status_code != 302 or response["Location"] != "/admin/mfa/":
            wrong[path] = (name, response.status_code, response.get("Location"))
    assert wrong == {}
    assert "_auth_user_id" not in client.session


def test_a_used_totp_code_is_refused_within_its_window_and_counts_as_a_failure(staff):
    code = totp(SECRET)
    first = Client()
    password_step(first)
    code_step(first, code)
    assert signed_in(first)
    second = Client()
    password_step(second)
    response = code_step(second, code)
    assert response.status_code == 200 and b"already used" in response.content
    assert "_auth_user_id" not in second.session
    staff.refresh_from_db()
    assert staff.failed_login_attempts == 1
    (failed,) = auth_entries(staff, "login_failed")
    assert failed.additional_data == {"reason": "mfa_code_reused", "attempts": 1}


def test_wrong_codes_lock_the_account_like_wrong_passwords(staff, org):
    from settings_app.models import OrgSetting

    OrgSetting.all_orgs.create(org=org, key="security.account_lockout_attempts", value=3)
    client = Client()
    password_step(client)
    assert code_step(client, "000000").status_code == 200
    assert code_step(client, "123456").status_code == 200
    response = code_step(client, "ZZZZZZZZ")
    assert response.status_code == 302 and response["Location"] == "/admin/login/"
    staff.refresh_from_db()
    assert staff.is_locked and staff.failed_login_attempts == 3
    assert [e.additional_data["reason"] for e in auth_entries(staff, "login_failed")][:3] == ["invalid_mfa_code"] * 3
    assert SecurityEvent.all_orgs.filter(user=staff, event_type="mfa_failed").count() == 3
    assert admin_mfa.PENDING not in client.session
    # Locked: even the right code no longer helps, the password step starts again.
    assert code_step(client, totp(SECRET))["Location"] == "/admin/login/"
    assert not signed_in(client)


def test_a_backup_code_works_once_in_any_spelling(staff):
    client = Client()
    password_step(client)
    response = code_step(client, "a1b2-c3d4")
    assert response.status_code == 302 and signed_in(client)
    assert auth_entries(staff, "login")[-1].additional_data == {"mfa_used": True, "mfa_method": "backup_code"}
    assert MFASettings.all_orgs.get(user=staff).backup_codes == []
    again = Client()
    password_step(again)
    response = code_step(again, BACKUP)
    assert response.status_code == 200 and b"Wrong code" in response.content
    assert "_auth_user_id" not in again.session


def test_the_code_step_expires(staff, monkeypatch):
    client = Client()
    password_step(client)
    real_time = time.time
    monkeypatch.setattr(admin_mfa.time, "time", lambda: real_time() + admin_mfa.STEP_SECONDS + 1)
    response = code_step(client, totp(SECRET))
    assert response.status_code == 302 and response["Location"] == "/admin/login/"
    assert "_auth_user_id" not in client.session


def test_staff_without_mfa_in_an_organization_that_does_not_require_it_sign_in_with_the_password(org, make_user):
    make_user(org, email="plain@acme.test", password=PASSWORD, is_staff=True, is_superuser=True)
    client = Client()
    response = password_step(client, "plain@acme.test")
    assert response.status_code == 302 and response["Location"] == "/admin/accounts/"
    assert signed_in(client)


@pytest.mark.parametrize("requirement", ["require_mfa", "required_admins", "required_all"])
def test_staff_of_an_organization_that_requires_mfa_enrol_before_the_admin_opens(requirement, org, make_user):
    from settings_app.models import OrgSetting

    if requirement == "require_mfa":
        org.require_mfa = True
        org.save()
    else:
        OrgSetting.all_orgs.create(org=org, key="security.mfa_enforcement", value=requirement)
    user = make_user(org, email="new@acme.test", password=PASSWORD, is_staff=True, is_superuser=True)
    client = Client()
    assert password_step(client, "new@acme.test")["Location"] == "/admin/mfa/enrol/"
    assert client.get("/admin/")["Location"] == "/admin/mfa/enrol/"
    assert client.get("/admin/mfa/")["Location"] == "/admin/mfa/enrol/"
    page = client.get("/admin/mfa/enrol/")
    row = MFASettings.all_orgs.get(user=user)
    assert not row.is_active and row.totp_secret
    assert row.totp_secret in page.content.decode()
    assert mfa.provisioning_uri(row.totp_secret, user.email) in page.content.decode().replace("&amp;", "&")
    assert row.totp_secret in client.get("/admin/mfa/enrol/").content.decode()  # a reload keeps the secret
    issued = AuditLog.all_orgs.filter(content_type__model="mfasettings", object_pk=str(row.pk))
    assert issued.count() == 1 and "totp_secret" not in (issued.get().changes or {})
    assert MFASettings.all_orgs.get(user=user).totp_secret == row.totp_secret
    assert client.post("/admin/mfa/enrol/", {"code": "000000"}).status_code == 200
    assert not MFASettings.all_orgs.get(user=user).is_active

    response = client.post("/admin/mfa/enrol/", {"code": totp(row.totp_secret)})
    assert response.status_code == 200 and signed_in(client)
    codes = re.findall(r"<code>([0-9A-F]{8})</code>", response.content.decode())
    row.refresh_from_db()
    assert row.is_active and row.methods == ["totp"] and len(codes) == len(row.backup_codes) == 10
    assert all(any(check_password(c, stored) for stored in row.backup_codes) for c in codes)
    # After a rollback AgentForge checks the same codes.
    salts: set = set()
    legacy = [legacy_passwords.to_legacy(stored, salts) for stored in row.backup_codes]
    assert all(agentforge_backup_code_matches(c.lower(), legacy) for c in codes)
    assert auth_entries(user, "mfa_enabled")[-1].additional_data == {"methods": ["totp"]}
    assert [e.additional_data for e in auth_entries(user, "login")] == [
        {"stage": "password", "next_step": "enrol"},
        {"mfa_used": True, "mfa_method": "totp"},
    ]
    # The shown codes are not kept anywhere in clear.
    assert all(c not in str(client.session.items()) for c in codes)


def test_starting_again_abandons_the_step(staff):
    client = Client()
    password_step(client)
    response = client.post("/admin/mfa/cancel/")
    assert response["Location"] == "/admin/login/"
    assert admin_mfa.PENDING not in client.session
    assert client.get("/admin/login/").status_code == 200
    assert auth_entries(staff, "logout")[-1].additional_data == {"stage": "second_factor", "reason": "abandoned"}


def test_two_requests_with_the_same_code_cannot_both_pass(staff):
    row = MFASettings.all_orgs.get(user=staff)
    other = MFASettings.all_orgs.get(user=staff)
    code = totp(SECRET)
    assert [mfa.accept_totp(row, code), mfa.accept_totp(other, code)] == ["ok", "reused"]


def test_a_non_staff_user_is_refused_before_the_second_factor(org, make_user):
    user = make_user(org, email="member@acme.test", password=PASSWORD)
    MFASettings.all_orgs.create(
        org=org, user=user, enabled=True, methods=["totp"], totp_secret=SECRET, totp_verified=True
    )
    client = Client()
    assert password_step(client, "member@acme.test").status_code == 200
    assert admin_mfa.PENDING not in client.session
    assert User.all_orgs.get(pk=user.pk).failed_login_attempts == 0
