"""API keys: create, verify, wrong key, expired, revoked; only prefix and digest stored."""

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from agentforge_core.crypto import sha256_hex
from agentforge_core.tenancy import OrgScopeError, org_scope, unscoped
from security.models import APIKey, AuditLog, SecurityEvent


@pytest.mark.django_db
def test_life_cycle(make_org, make_user):
    org = make_org()
    user = make_user(org)
    key, plaintext = APIKey.all_orgs.create_key(org=org, name="CI", user=user)
    # A visible prefix plus 256 random bits; only the prefix and the SHA-256 are stored.
    assert plaintext.startswith(key.prefix + "_") and key.prefix.startswith("afk_")
    assert len(plaintext) - len(key.prefix) - 1 >= 22  # >= 128 bits in url-safe base64
    with unscoped(), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM api_keys")
        stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
    assert plaintext not in stored and plaintext[len(key.prefix) :] not in stored
    assert key.key_hash == sha256_hex(plaintext)
    # Default expiry: 365 days.
    assert timezone.now() + dt.timedelta(days=364) < key.expires_at <= timezone.now() + dt.timedelta(days=365)

    found = APIKey.all_orgs.get_from_key(plaintext, ip="192.0.2.10")
    assert found == key and found.last_used_ip == "192.0.2.10"
    key.refresh_from_db()
    assert key.last_used_at is not None and key.last_used_ip == "192.0.2.10"

    assert APIKey.all_orgs.get_from_key(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert APIKey.all_orgs.get_from_key("afk_00000000_" + "x" * 43) is None
    assert APIKey.all_orgs.get_from_key("") is None
    assert APIKey.all_orgs.get_from_key(None) is None
    assert SecurityEvent.all_orgs.filter(event_type="api_key_rejected", details__reason="wrong_secret").count() == 1

    key.revoke(by=user)
    assert key.is_revoked and key.revoked_by == user
    assert APIKey.all_orgs.get_from_key(plaintext) is None
    assert SecurityEvent.all_orgs.filter(event_type="api_key_rejected", details__reason="revoked").count() == 1
    # Creation and revocation are audited; the digest never is.
    entries = AuditLog.all_orgs.filter(resource_type="apikey").order_by("id")
    assert [e.legacy_action for e in entries] == ["create", "update"]
    assert all("key_hash" not in (e.changes or {}) for e in entries)
    assert "revoked_at" in entries[1].changes


@pytest.mark.django_db
def test_expired_and_expiry_setting(make_org):
    from settings_app.models import OrgSetting

    org = make_org()
    OrgSetting.all_orgs.create(org=org, key="security.api_key_expiry_days", value=30)
    key, plaintext = APIKey.all_orgs.create_key(org=org, name="short")
    assert key.expires_at <= timezone.now() + dt.timedelta(days=30)
    APIKey.all_orgs.filter(pk=key.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert APIKey.all_orgs.get_from_key(plaintext) is None
    forever, plain2 = APIKey.all_orgs.create_key(org=org, name="forever", expires_at=None)
    assert forever.expires_at is None and APIKey.all_orgs.get_from_key(plain2) == forever
    assert set(APIKey.all_orgs.active()) == {forever}


@pytest.mark.django_db
def test_scoped_manager(make_org, make_user):
    a, b = make_org(), make_org()
    with org_scope(a):
        key, plaintext = APIKey.objects.create_key(name="in scope")
        assert key.org_id == a.pk
        assert APIKey.objects.get_from_key(plaintext) == key
        with pytest.raises(OrgScopeError):
            APIKey.objects.create_key(org=b, name="other org")
    with org_scope(b):
        assert APIKey.objects.get_from_key(plaintext) is None  # another organization's key
    with pytest.raises(OrgScopeError):
        APIKey.objects.get_from_key(plaintext)  # no organization active: fail closed
    with pytest.raises(ValueError):
        APIKey.all_orgs.create_key(org=a, name="x", user=make_user(b))


@pytest.mark.django_db
def test_request_ip_recorded(make_org, client):
    """Inside a request the client IP comes from the audit context."""
    from security.middleware import _request_context

    org = make_org()
    key, plaintext = APIKey.all_orgs.create_key(org=org, name="ctx")
    token = _request_context.set({"ip_address": "198.51.100.77"})
    try:
        APIKey.all_orgs.get_from_key(plaintext)
    finally:
        _request_context.reset(token)
    key.refresh_from_db()
    assert key.last_used_ip == "198.51.100.77"


def _updates(captured):
    return [q["sql"] for q in captured.captured_queries if q["sql"].lstrip().upper().startswith("UPDATE")]


@pytest.mark.django_db
def test_use_recorded_at_most_once_a_minute(make_org):
    """Every API request checks its key: only the first use in a minute writes."""
    from django.test.utils import CaptureQueriesContext

    org = make_org()
    key, plaintext = APIKey.all_orgs.create_key(org=org, name="busy")
    with CaptureQueriesContext(connection) as first:
        APIKey.all_orgs.get_from_key(plaintext, ip="192.0.2.1")
    with CaptureQueriesContext(connection) as again:
        for _ in range(5):
            APIKey.all_orgs.get_from_key(plaintext, ip="192.0.2.1")
    assert len(_updates(first)) == 1
    assert _updates(again) == []
    key.refresh_from_db()
    recorded = key.last_used_at

    # Another client address within the minute: still no write (load-balanced clients
    # would otherwise write on every request).
    with CaptureQueriesContext(connection) as other_ip:
        APIKey.all_orgs.get_from_key(plaintext, ip="192.0.2.2")
    assert _updates(other_ip) == []
    key.refresh_from_db()
    assert key.last_used_at == recorded and key.last_used_ip == "192.0.2.1"

    # A minute later the same address is recorded again, so "last used" stays true to the minute.
    old = timezone.now() - dt.timedelta(seconds=61)
    APIKey.all_orgs.filter(pk=key.pk).update(last_used_at=old)
    with CaptureQueriesContext(connection) as later:
        APIKey.all_orgs.get_from_key(plaintext, ip="192.0.2.2")
    assert len(_updates(later)) == 1
    key.refresh_from_db()
    assert key.last_used_at > old + dt.timedelta(seconds=60)


@pytest.mark.django_db
def test_concurrent_uses_write_once(make_org):
    """Two workers that loaded the key before either recorded its use: the second write is a no-op."""
    org = make_org()
    key, plaintext = APIKey.all_orgs.create_key(org=org, name="race")
    stale = APIKey.all_orgs.get(pk=key.pk)  # loaded before the first use, last_used_at is None
    APIKey.all_orgs.get_from_key(plaintext, ip="192.0.2.9")
    key.refresh_from_db()
    first = key.last_used_at
    from security.models.api_keys import _record_use

    _record_use(stale, "192.0.2.9")
    key.refresh_from_db()
    assert key.last_used_at == first


@pytest.mark.django_db
def test_the_fast_lookup_builds_the_key_the_orm_builds(make_org, make_user):
    """APIKey.all_orgs.get_from_key reads one row by prefix without the ORM's compiler: same fields, same types."""
    from django.test.utils import CaptureQueriesContext

    org = make_org()
    key, plaintext = APIKey.all_orgs.create_key(org=org, name="fields", user=make_user(org), scopes=["agents:read"])
    APIKey.all_orgs.get_from_key(plaintext, ip="2001:db8::1")  # records the use: every column has a value
    with CaptureQueriesContext(connection) as reads:
        found = APIKey.all_orgs.get_from_key(plaintext)
    assert len(reads) == 1
    stored = APIKey.all_orgs.get(pk=key.pk)
    for field in APIKey._meta.concrete_fields:
        ours, orms = getattr(found, field.attname), getattr(stored, field.attname)
        assert (ours, type(ours)) == (orms, type(orms)), field.attname
    assert found.last_used_at is not None and timezone.is_aware(found.last_used_at)
    assert (found._state.adding, found._state.db) == (False, "default")


@pytest.mark.django_db
@pytest.mark.parametrize("manager", ["all_orgs", "objects"])
def test_a_key_of_an_inactive_user_or_a_suspended_organization_is_refused(make_org, make_user, manager):
    from accounts.models import Organization, User

    org = make_org()
    user = make_user(org)
    with_user, plain_with_user = APIKey.all_orgs.create_key(org=org, name="user's", user=user)
    service, plain_service = APIKey.all_orgs.create_key(org=org, name="service")

    def check(plaintext):
        with org_scope(org):  # the scoped manager needs it; all_orgs ignores it
            return getattr(APIKey, manager).get_from_key(plaintext)

    assert check(plain_with_user) == with_user
    User.all_orgs.filter(pk=user.pk).update(status=User.Status.LOCKED)  # time-bound: the key still works
    assert check(plain_with_user) == with_user
    User.all_orgs.filter(pk=user.pk).update(status=User.Status.SUSPENDED)
    assert check(plain_with_user) is None
    assert check(plain_service) == service  # a key without a user does not depend on one
    Organization.all_orgs.filter(pk=org.pk).update(status=Organization.Status.SUSPENDED)
    assert check(plain_service) is None
    reasons = SecurityEvent.all_orgs.filter(event_type="api_key_rejected").order_by("created_at")
    assert [event.details["reason"] for event in reasons] == ["user_inactive", "org_inactive"]
