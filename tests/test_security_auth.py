"""Authentication: lockout, password policy and history, tokens, and their audit entries."""

import datetime as dt

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import get_hasher
from django.core.exceptions import ValidationError
from django.test import Client, override_settings
from django.utils import timezone

from accounts.models import PasswordHistory, User
from security.models import AuditLog, SecurityEvent

PASSWORD = "correct horse battery staple"
UA = "Mozilla/5.0 (AgentForge test)"


def org_setting(org, key, value):
    from settings_app.models import OrgSetting

    OrgSetting.all_orgs.create(org=org, key=f"security.{key}", value=value)


def auth_entries(user=None, action=None, **filters):
    qs = AuditLog.all_orgs.filter(content_type__model="user", **filters).order_by("id")
    if user is not None:
        qs = qs.filter(object_pk=str(user.pk))
    if action is not None:
        qs = qs.filter(legacy_action=action)
    return list(qs)


def admin_login(client, email, password, **extra):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": email, "password": password},
        HTTP_USER_AGENT=UA,
        **extra,
    )


@pytest.fixture
def staff(make_org, make_user):
    org = make_org()
    user = make_user(org, email="Admin@Example.com", password=PASSWORD, is_staff=True, is_superuser=True)
    return user


@pytest.mark.django_db
def test_admin_login_success_failure_logout_are_audited_with_ip_and_agent(staff):
    client = Client(REMOTE_ADDR="203.0.113.7")
    response = admin_login(client, "admin@example.com", "wrong password")
    assert response.status_code == 200  # form redisplayed
    response = admin_login(client, "ADMIN@example.com", PASSWORD)
    assert response.status_code == 302
    client.post("/admin/logout/", HTTP_USER_AGENT=UA)
    (failed,) = auth_entries(staff, "login_failed")
    (login,) = auth_entries(staff, "login")
    (logout,) = auth_entries(staff, "logout")
    for entry in (failed, login, logout):
        assert entry.remote_addr == "203.0.113.7"
        assert entry.user_agent == UA
        assert entry.org_id == staff.org_id
        assert entry.actor_id == staff.pk
        assert entry.request_path.startswith("/admin/")
        assert entry.request_method == "POST"
    assert failed.success is False and failed.additional_data == {"reason": "invalid_password", "attempts": 1}
    assert login.success is True and logout.success is True
    # The session is named by its digest only.
    assert login.session_id and len(login.session_id) == 64
    assert client.session.session_key not in {login.session_id, logout.session_id}
    staff.refresh_from_db()
    assert staff.failed_login_attempts == 0  # reset by the success
    assert staff.last_login_ip == "203.0.113.7"
    assert SecurityEvent.all_orgs.filter(user=staff, event_type="login_failed", ip_address="203.0.113.7").count() == 1


@pytest.mark.django_db
def test_unknown_email_failure_is_audited(make_org):
    make_org()
    client = Client(REMOTE_ADDR="198.51.100.9")
    admin_login(client, "nobody@example.com", "whatever")
    entry = AuditLog.all_orgs.get(legacy_action="login_failed", actor_email="nobody@example.com")
    assert entry.success is False and entry.actor_id is None and entry.org_id is None
    assert entry.remote_addr == "198.51.100.9" and entry.user_agent == UA
    assert SecurityEvent.all_orgs.filter(email="nobody@example.com", event_type="login_failed").exists()


@pytest.mark.django_db
@override_settings(TRUSTED_PROXIES=["10.0.0.0/8"])
def test_x_forwarded_for_only_from_trusted_proxies(staff):
    spoofing = Client(REMOTE_ADDR="203.0.113.50")
    admin_login(spoofing, "admin@example.com", "bad", HTTP_X_FORWARDED_FOR="1.2.3.4", HTTP_X_FORWARDED_PORT="4444")
    proxied = Client(REMOTE_ADDR="10.1.2.3")
    admin_login(proxied, "admin@example.com", "bad", HTTP_X_FORWARDED_FOR="1.2.3.4, 10.9.9.9")
    first, second = auth_entries(staff, "login_failed")
    assert first.remote_addr == "203.0.113.50"  # the header of an untrusted client is ignored
    assert second.remote_addr == "1.2.3.4"  # behind trusted proxies: the last untrusted hop
    assert first.remote_port is None
    staff.refresh_from_db()
    assert staff.last_login_ip is None
    # Model changes made in the request carry the same address (auditlog's context).
    from django.test import RequestFactory

    from security.middleware import AuditContextMiddleware

    spoofed = RequestFactory().get(
        "/", REMOTE_ADDR="203.0.113.50", HTTP_X_FORWARDED_FOR="1.2.3.4", HTTP_X_FORWARDED_PORT="4444"
    )
    assert AuditContextMiddleware._get_remote_addr(spoofed) == "203.0.113.50"
    assert AuditContextMiddleware._get_remote_port(spoofed) is None
    trusted = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4", HTTP_X_FORWARDED_PORT="4444"
    )
    assert AuditContextMiddleware._get_remote_addr(trusted) == "1.2.3.4"
    assert AuditContextMiddleware._get_remote_port(trusted) == 4444


@pytest.mark.django_db
def test_lockout_from_org_settings_and_unlock_after_duration(make_org, make_user):
    org = make_org()
    org_setting(org, "account_lockout_attempts", 3)
    org_setting(org, "account_lockout_duration_minutes", 15)
    user = make_user(org, email="lock@example.com", password=PASSWORD)
    for _ in range(3):
        assert authenticate(None, username="lock@example.com", password="nope") is None
    user.refresh_from_db()
    assert user.failed_login_attempts == 3
    assert user.status == User.Status.LOCKED
    assert timezone.now() + dt.timedelta(minutes=14) < user.locked_until <= timezone.now() + dt.timedelta(minutes=15)
    # Locked: even the right password is refused, and the attempt is recorded.
    assert authenticate(None, username="lock@example.com", password=PASSWORD) is None
    events = list(SecurityEvent.all_orgs.filter(user=user).values_list("event_type", flat=True).order_by("id"))
    assert events == ["login_failed"] * 3 + ["account_locked", "locked_login_attempt"]
    reasons = [e.additional_data["reason"] for e in auth_entries(user, "login_failed")]
    assert reasons == ["invalid_password"] * 3 + ["lockout", "account_locked"]
    assert all(e.success is False for e in auth_entries(user, "login_failed"))
    # After the lock expires the right password works and everything resets.
    User.all_orgs.filter(pk=user.pk).update(locked_until=timezone.now() - dt.timedelta(seconds=1))
    assert authenticate(None, username="lock@example.com", password=PASSWORD) == user
    user.refresh_from_db()
    assert (user.failed_login_attempts, user.locked_until, user.status) == (0, None, User.Status.ACTIVE)


@pytest.mark.django_db
def test_lockout_defaults_without_org_settings(make_org, make_user):
    org = make_org()
    user = make_user(org, email="dflt@example.com", password=PASSWORD)
    for n in range(4):
        authenticate(None, username="dflt@example.com", password=f"bad{n}")
    user.refresh_from_db()
    assert user.failed_login_attempts == 4 and user.locked_until is None
    authenticate(None, username="dflt@example.com", password="bad")
    user.refresh_from_db()
    assert user.is_locked
    assert user.locked_until > timezone.now() + dt.timedelta(minutes=29)


@pytest.mark.django_db
def test_failure_count_restarts_after_reset_window(make_org, make_user):
    org = make_org()
    org_setting(org, "account_lockout_attempts", 2)
    user = make_user(org, email="win@example.com", password=PASSWORD)
    authenticate(None, username="win@example.com", password="bad")
    SecurityEvent.all_orgs.filter(user=user).update(created_at=timezone.now() - dt.timedelta(minutes=31))
    authenticate(None, username="win@example.com", password="bad")
    user.refresh_from_db()
    assert user.failed_login_attempts == 1 and not user.is_locked


@pytest.mark.django_db
def test_legacy_pbkdf2_hash_verified_and_upgraded_on_login(make_org, make_user):
    import base64
    import hashlib

    org = make_org()
    user = make_user(org, email="legacy@example.com")
    salt = "ab" * 32
    key = hashlib.pbkdf2_hmac("sha256", "pässword-legacy".encode(), salt.encode(), 100000).hex()
    encoded = f"pbkdf2_sha256$100000${salt}${base64.b64encode(bytes.fromhex(key)).decode()}"
    User.all_orgs.filter(pk=user.pk).update(password=encoded)
    assert authenticate(None, username="legacy@example.com", password="wrong") is None
    assert authenticate(None, username="legacy@example.com", password="pässword-legacy") is not None
    user.refresh_from_db()
    # re-hashed at Django's iteration count, still PBKDF2 while a rollback to AgentForge is possible
    assert user.password.startswith(f"pbkdf2_sha256${get_hasher('pbkdf2_sha256').iterations}$")
    # An upgrade is not a password change: no history row, no password_change entry.
    assert not PasswordHistory.all_orgs.filter(user=user).exists()
    assert not auth_entries(user, "password_change")


@pytest.mark.django_db
def test_change_password_policy_history_and_audit(make_org, make_user):
    from accounts.services import change_password

    org = make_org()
    org_setting(org, "password_history_count", 2)
    org_setting(org, "password_min_length", 12)
    user = make_user(org, email="hist@example.com", password="first password 1")
    with pytest.raises(ValidationError, match="at least 12"):
        change_password(user, "short pw 1")
    with pytest.raises(ValidationError, match="used recently"):
        change_password(user, "first password 1")  # the current one
    change_password(user, "second password 2")
    change_password(user, "third password 3")
    with pytest.raises(ValidationError, match="used recently"):
        change_password(user, "first password 1")  # still among the last two
    change_password(user, "fourth password 4")
    change_password(user, "first password 1")  # out of the window now
    history = list(PasswordHistory.all_orgs.filter(user=user).order_by("position"))
    assert len(history) == 2  # trimmed to the policy's count
    assert all(h.password_hash.startswith("pbkdf2_sha256$") for h in history)
    user.refresh_from_db()
    assert user.password_changed_at is not None and user.check_password("first password 1")
    changes = auth_entries(user, "password_change")
    assert len(changes) == 4 and all(e.success for e in changes)
    assert all("password" not in (e.changes or {}) for e in AuditLog.all_orgs.filter(object_pk=str(user.pk)))


@pytest.mark.django_db
def test_long_passwords_allowed_and_no_composition_rules(make_org, make_user):
    from django.contrib.auth.password_validation import validate_password

    org = make_org()
    user = make_user(org)
    validate_password("a" * 7 + "bcdefgh" * 9, user)  # 70 chars, lower-case only
    with pytest.raises(ValidationError):
        validate_password("x" * 129 + "yz", user)


@pytest.mark.django_db
def test_reset_and_verification_tokens_are_hashed_and_expire(make_org, make_user):
    from accounts import tokens

    org = make_org()
    user = make_user(org, email="tok@example.com", status=User.Status.PENDING)
    token = tokens.issue_verification_token(user)
    user.refresh_from_db()
    assert token not in (user.verification_token_hash or "") and len(user.verification_token_hash) == 64
    assert tokens.verify_email("not-" + token) is None
    assert tokens.verify_email(token).email_verified is True
    assert tokens.verify_email(token) is None  # used up
    user.refresh_from_db()
    assert user.status == User.Status.ACTIVE

    reset = tokens.issue_password_reset_token(user)
    assert tokens.user_for_reset_token(reset) == user
    User.all_orgs.filter(pk=user.pk).update(reset_password_expires=timezone.now() - dt.timedelta(seconds=1))
    assert tokens.user_for_reset_token(reset) is None  # expired
    reset = tokens.issue_password_reset_token(user)
    assert tokens.reset_password(reset, "a brand new password") == user
    assert tokens.reset_password(reset, "another new password") is None  # used up
    user.refresh_from_db()
    assert user.check_password("a brand new password")
    (entry,) = auth_entries(user, "password_reset")
    assert entry.success
    assert SecurityEvent.all_orgs.filter(user=user, event_type="password_reset_requested").count() == 2


@pytest.mark.django_db
def test_user_sessions_store_only_the_digest(make_org, make_user):
    from accounts import tokens
    from agentforge_core.crypto import sha256_hex

    org = make_org()
    user = make_user(org)
    session, token = tokens.create_session(user)
    assert session.token_hash == sha256_hex(token) and token not in session.token_hash
    assert tokens.get_session(token) == session
    assert tokens.get_session(token + "x") is None
    assert tokens.revoke_session(token)
    assert tokens.get_session(token) is None


@pytest.mark.django_db
def test_mfa_changes_are_audited(make_org, make_user):
    from accounts.models import MFASettings

    org = make_org()
    user = make_user(org)
    mfa = MFASettings.all_orgs.create(org=org, user=user, enabled=False, totp_secret="JBSWY3DPEHPK3PXP")
    mfa.enabled, mfa.methods = True, ["totp"]
    mfa.save()
    mfa.enabled = False
    mfa.save()
    assert [e.legacy_action for e in auth_entries(user) if e.legacy_action.startswith("mfa")] == [
        "mfa_enabled",
        "mfa_disabled",
    ]
    # The TOTP secret never reaches a diff.
    assert not AuditLog.all_orgs.filter(changes__icontains="JBSWY3DP").exists()
    for entry in AuditLog.all_orgs.filter(resource_type="mfasettings"):
        assert "totp_secret" not in (entry.changes or {})
