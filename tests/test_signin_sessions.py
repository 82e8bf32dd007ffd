"""Platform sessions (accounts.tokens) end on a password change or reset, deactivation or a lock."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import authenticate
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts import tokens
from accounts.models import User, UserSession
from security.models import AuditLog

PASSWORD = "the first password 1"


@pytest.fixture(autouse=True)
def cheap_hashes(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def user(make_org, make_user):
    return make_user(make_org(), email="member@example.com", password=PASSWORD)


@pytest.fixture
def live(user):
    """Two live sessions of the user, and one of somebody else that must survive."""
    other = User.all_orgs.create_user(email="bystander@example.com", password=PASSWORD, org=user.org)
    return [tokens.create_session(user)[1], tokens.create_session(user)[1]], tokens.create_session(other)[1]


def ended_because(user, reason: str, sessions: int = 2) -> bool:
    entries = AuditLog.all_orgs.filter(legacy_action="sessions_revoked", object_pk=str(user.pk))
    return [entry.additional_data for entry in entries] == [{"reason": reason, "sessions": sessions}]


def all_ended(own) -> bool:
    return all(tokens.get_session(token) is None for token in own)


@pytest.mark.django_db
def test_a_password_change_ends_the_sessions(user, live):
    from accounts.services import change_password

    own, bystander = live
    change_password(user, "the second password 2")
    assert all_ended(own) and tokens.get_session(bystander) is not None
    assert ended_because(user, "password_change")
    assert UserSession.all_orgs.filter(user=user, revoked_at__isnull=False).count() == 2


@pytest.mark.django_db
def test_a_reset_ends_the_sessions(user, live):
    own, _ = live
    assert tokens.reset_password(tokens.issue_password_reset_token(user), "the second password 2") == user
    assert all_ended(own) and ended_because(user, "password_reset")


@pytest.mark.django_db
def test_set_password_and_save_ends_the_sessions(user, live):
    own, _ = live
    user.set_password("the second password 2")
    user.save()
    assert all_ended(own) and ended_because(user, "password_change")


@pytest.mark.django_db
def test_the_admin_password_form_ends_the_sessions(user, live, make_user):
    own, _ = live
    admin_user = make_user(user.org, email="root@example.com", password=PASSWORD, is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {"password1": "Another-Long-pass-77", "password2": "Another-Long-pass-77", "usable_password": "true"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert all_ended(own) and ended_because(user, "password_change")
    entry = AuditLog.all_orgs.get(legacy_action="sessions_revoked", object_pk=str(user.pk))
    assert entry.actor_id == admin_user.pk


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["inactive", "suspended", "pending"])
def test_deactivation_ends_the_sessions(user, live, status):
    own, bystander = live
    user.status = status
    user.save()
    assert all_ended(own) and ended_because(user, f"account_{status}")
    assert tokens.get_session(bystander) is not None


@pytest.mark.django_db
def test_the_admin_lock_action_ends_the_sessions(user, live, make_user):
    own, _ = live
    admin_user = make_user(user.org, email="root@example.com", password=PASSWORD, is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin_user)
    response = client.post("/admin/accounts/user/", {"action": "lock_users", "_selected_action": [str(user.pk)]})
    assert response.status_code == 302
    assert all_ended(own) and ended_because(user, "account_locked")


@pytest.mark.django_db
def test_a_lockout_by_failed_sign_ins_ends_the_sessions(user, live):
    own, _ = live
    for _ in range(5):
        assert authenticate(None, username=user.email, password="wrong") is None
    user.refresh_from_db()
    assert user.is_locked
    assert all_ended(own) and ended_because(user, "account_locked")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change, reason",
    [
        ({"status": "inactive"}, "account_inactive"),
        ({"status": "suspended"}, "account_suspended"),
        ({"locked_until": "future"}, "account_locked"),
        ({"password_changed_at": "future"}, "password_changed"),
    ],
)
def test_a_change_made_with_update_ends_the_session_at_its_next_use(user, live, change, reason):
    """update() and the importer send no signal: the lookup checks the user itself."""
    own, bystander = live
    values = {
        key: timezone.now() + dt.timedelta(minutes=5) if value == "future" else value for key, value in change.items()
    }
    User.all_orgs.filter(pk=user.pk).update(**values)
    assert tokens.get_session(own[0]) is None
    assert ended_because(user, reason)
    assert tokens.get_session(own[1]) is None  # ended with the first
    assert tokens.get_session(bystander) is not None


@pytest.mark.django_db
def test_unchanged_users_keep_their_sessions(user, live):
    own, _ = live
    user.first_name = "Renamed"
    user.save()
    User.all_orgs.filter(pk=user.pk).update(locked_until=timezone.now() - dt.timedelta(minutes=1))
    assert all(tokens.get_session(token) is not None for token in own)
    assert not AuditLog.all_orgs.filter(legacy_action="sessions_revoked").exists()
