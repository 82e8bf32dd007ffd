"""Sign-in throttling per client address and per address + account (accounts.throttle)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import User
from accounts.throttle import address_key
from security.models import AuditLog, SecurityEvent

PASSWORD = "the right password 1"


@pytest.fixture(autouse=True)
def cheap_hashes(settings):
    # The throttle is about counting; a costly hash per attempt would only slow the tests down.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def org(make_org):
    return make_org()


@pytest.fixture
def staff(org, make_user):
    return make_user(org, email="staff@example.com", password=PASSWORD, is_staff=True)


def sign_in(address, email, password, **headers):
    return Client(REMOTE_ADDR=address).post(
        "/admin/login/?next=/admin/", {"username": email, "password": password}, **headers
    )


def signed_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def refused_as_throttled(response) -> bool:
    return response.status_code == 200 and "Too many failed sign-ins" in response.content.decode()


@pytest.mark.django_db
def test_spraying_twenty_accounts_from_one_address_is_blocked_and_another_address_is_not(org, make_user, staff):
    victims = [make_user(org, email=f"victim{n}@example.com", password=PASSWORD) for n in range(20)]
    for victim in victims:  # one guess per account: the per-account counters never come near a lock
        response = sign_in("203.0.113.10", victim.email, "Summer2026!")
        assert response.status_code == 200 and not refused_as_throttled(response)
    # The 21st attempt is refused before any password is checked, even the right one of another account.
    assert refused_as_throttled(sign_in("203.0.113.10", staff.email, PASSWORD))
    assert signed_in(sign_in("198.51.100.20", staff.email, PASSWORD))
    assert all(User.all_orgs.get(pk=v.pk).failed_login_attempts == 1 for v in victims)

    (block,) = SecurityEvent.all_orgs.filter(event_type="suspicious_activity")
    assert block.ip_address == "203.0.113.10" and block.severity == "critical"
    assert block.details == {
        "reason": "signin_throttled",
        "scope": "address",
        "blocked_seconds": 60,
        "address": "203.0.113.10",
    }
    (refused,) = AuditLog.all_orgs.filter(legacy_action="login_failed", additional_data__reason="throttled")
    assert refused.actor_email == staff.email and refused.remote_addr == "203.0.113.10" and not refused.success
    assert refused.additional_data["scope"] == "address" and 0 < refused.additional_data["retry_after"] <= 60
    assert (
        AuditLog.all_orgs.filter(legacy_action="login_failed", additional_data__reason="signin_throttled").count() == 1
    )


@pytest.mark.django_db
def test_address_blocks_grow_on_each_repeat(org, make_user, settings):
    settings.SIGNIN_THROTTLE_ADDRESS_FAILURES = 2
    settings.SIGNIN_THROTTLE_BLOCK = 1
    for round_ in range(2):
        for n in range(2):
            sign_in("203.0.113.11", f"nobody{round_}{n}@example.com", "guess")
        assert refused_as_throttled(sign_in("203.0.113.11", "nobody@example.com", "guess"))
        time.sleep(2**round_ + 0.1)
    blocks = SecurityEvent.all_orgs.filter(event_type="suspicious_activity").order_by("created_at")
    assert [event.details["blocked_seconds"] for event in blocks] == [1, 2]


@pytest.mark.django_db
def test_one_address_cannot_lock_an_account(staff):
    """Three failures from one address block that address for the account before the lockout's
    five; by the end of the pair's quiet time the account's own count has started again."""
    for _ in range(3):
        assert not refused_as_throttled(sign_in("203.0.113.12", staff.email, "wrong"))
    assert refused_as_throttled(sign_in("203.0.113.12", staff.email, PASSWORD))
    staff.refresh_from_db()
    assert staff.failed_login_attempts == 3 and not staff.is_locked
    (event,) = SecurityEvent.all_orgs.filter(event_type="suspicious_activity")
    assert event.user_id == staff.pk and event.org_id == staff.org_id and event.details["scope"] == "address_account"
    assert event.details["blocked_seconds"] == 1800
    # The owner, elsewhere, is not affected; the same address may still try other accounts.
    assert signed_in(sign_in("198.51.100.21", staff.email, PASSWORD))
    assert not refused_as_throttled(sign_in("203.0.113.12", "someone-else@example.com", "wrong"))


@pytest.mark.django_db
def test_after_the_quiet_time_the_pair_starts_again_and_still_cannot_lock(staff, settings):
    settings.SIGNIN_THROTTLE_ACCOUNT_WINDOW = 1
    for _ in range(3):
        sign_in("203.0.113.13", staff.email, "wrong")
    assert refused_as_throttled(sign_in("203.0.113.13", staff.email, "wrong"))
    time.sleep(1.1)
    # As when the default 30 minutes have passed: the account's failures are as old.
    SecurityEvent.all_orgs.filter(user=staff).update(created_at=timezone.now() - dt.timedelta(minutes=31))
    for _ in range(3):
        assert not refused_as_throttled(sign_in("203.0.113.13", staff.email, "wrong"))
    staff.refresh_from_db()
    assert staff.failed_login_attempts == 3 and not staff.is_locked


@pytest.mark.django_db
def test_a_success_gives_the_pair_its_attempts_back(staff):
    for _ in range(2):
        sign_in("203.0.113.14", staff.email, "wrong")
    assert signed_in(sign_in("203.0.113.14", staff.email, PASSWORD))
    for _ in range(2):
        assert not refused_as_throttled(sign_in("203.0.113.14", staff.email, "wrong"))


@pytest.mark.django_db
def test_unknown_and_known_emails_are_throttled_alike(staff):
    for email in (staff.email, "ghost@example.com"):
        for _ in range(3):
            assert not refused_as_throttled(sign_in("203.0.113.15", email, "wrong"))
        assert refused_as_throttled(sign_in("203.0.113.15", email, "wrong"))


@pytest.mark.django_db
def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(staff, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    settings.SIGNIN_THROTTLE_ADDRESS_FAILURES = 3
    for n in range(3):  # a new forged address each time: still counted as the peer's
        sign_in("203.0.113.16", f"spray{n}@example.com", "guess", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
    assert refused_as_throttled(sign_in("203.0.113.16", staff.email, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.99"))
    # Behind a trusted proxy the forwarded client is counted, not the proxy.
    for n in range(3):
        sign_in("10.0.0.5", f"spray{n}@example.com", "guess", HTTP_X_FORWARDED_FOR="192.0.2.50")
    assert refused_as_throttled(sign_in("10.0.0.5", staff.email, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.50"))
    assert signed_in(sign_in("10.0.0.5", staff.email, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.51"))


@pytest.mark.django_db
def test_throttle_applies_to_authenticate_with_a_request_and_not_without(staff):
    from django.contrib.auth import authenticate
    from django.test import RequestFactory

    request = RequestFactory().post("/", REMOTE_ADDR="203.0.113.17")
    for _ in range(3):
        assert authenticate(request, username=staff.email, password="wrong") is None
    assert authenticate(request, username=staff.email, password=PASSWORD) is None  # throttled
    assert authenticate(None, username=staff.email, password=PASSWORD) == staff  # no address, no throttle


def test_ipv6_clients_are_counted_by_their_64_network():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:203.0.113.5") == address_key("203.0.113.5") == "203.0.113.5"


def test_a_throttle_that_lets_one_address_reach_the_lockout_is_reported(settings):
    from accounts.checks import check_signin_throttle_comes_before_the_lockout as check

    assert check() == []
    settings.SIGNIN_THROTTLE_ACCOUNT_FAILURES = 5
    assert [w.id for w in check()] == ["accounts.W001"]
    settings.SIGNIN_THROTTLE_ACCOUNT_FAILURES, settings.SIGNIN_THROTTLE_ACCOUNT_WINDOW = 3, 600
    assert [w.id for w in check()] == ["accounts.W001"]
    settings.SIGNIN_THROTTLE_ACCOUNT_FAILURES = 0  # off: the lockout alone, by choice
    assert check() == []


@pytest.mark.django_db
def test_attempts_in_parallel_get_no_more_password_checks_than_the_limit(staff, settings):
    """Counted before the password is checked: the attempts past the limit are refused even
    while the earlier ones are still being verified."""
    from django.test import RequestFactory

    from accounts.throttle import SigninThrottle

    settings.SIGNIN_THROTTLE_ADDRESS_FAILURES = 5
    request = RequestFactory().post("/", REMOTE_ADDR="203.0.113.18")
    in_flight = [SigninThrottle(request, f"target{n}@example.com") for n in range(8)]
    refusals = [throttle.refusal() for throttle in in_flight]  # none has failed yet
    assert [r is None for r in refusals] == [True] * 5 + [False] * 3
    assert {r.scope for r in refusals if r is not None} == {"address"}
    pair = [SigninThrottle(request, staff.email) for _ in range(2)]
    assert [throttle.refusal() for throttle in pair] == [refusals[-1]] * 2  # the address is spent


@pytest.mark.django_db(transaction=True)
def test_parallel_sign_ins_of_one_account_from_one_address_all_succeed(org, make_user, monkeypatch):
    """Eight clients signing in to one account at once (tabs, a script, the serve benchmark):
    counted before their passwords were checked, the fourth and later were refused with the
    right password. They take turns now, and every one gets in."""
    import threading

    from django.contrib.auth import authenticate
    from django.db import connection
    from django.test import RequestFactory

    from accounts.backends import EmailBackend

    make_user(org, email="busy@example.com", password=PASSWORD)
    verify = EmailBackend.verify_password

    def slow_verify(user, password):  # as long as a real hash, so the attempts overlap
        time.sleep(0.15)
        return verify(user, password)

    monkeypatch.setattr(EmailBackend, "verify_password", staticmethod(slow_verify))
    start = threading.Barrier(8)
    signed_in = []

    def sign_in_once():
        try:
            start.wait(10)
            request = RequestFactory().post("/admin/login/", REMOTE_ADDR="198.51.100.7")
            signed_in.append(authenticate(request, username="busy@example.com", password=PASSWORD) is not None)
        finally:
            connection.close()

    threads = [threading.Thread(target=sign_in_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert signed_in == [True] * 8
    # A wrong password in parallel is still counted: the pair's limit holds.
    assert sign_in("198.51.100.7", "busy@example.com", "wrong").status_code == 200


def database_fails_in(monkeypatch, attribute: str) -> None:
    """The database goes away in the middle of a sign-in, at ``EmailBackend.<attribute>``."""
    from django.db import OperationalError

    from accounts.backends import EmailBackend

    def fail(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(EmailBackend, attribute, staticmethod(fail))


@pytest.mark.django_db
def test_sign_ins_that_met_a_database_outage_count_nothing(staff, monkeypatch):
    # An office behind one address, the database down for a moment: every tab retries.
    database_fails_in(monkeypatch, "verify_password")
    for _ in range(5):
        assert (
            Client(REMOTE_ADDR="203.0.113.30", raise_request_exception=False)
            .post("/admin/login/?next=/admin/", {"username": staff.email, "password": PASSWORD})
            .status_code
            == 503
        )
    monkeypatch.undo()
    # Back up: the right password signs in, and the pair still has all its attempts.
    assert signed_in(sign_in("203.0.113.30", staff.email, PASSWORD))
    for _ in range(3):
        assert not refused_as_throttled(sign_in("203.0.113.30", staff.email, "wrong"))
    assert refused_as_throttled(sign_in("203.0.113.30", staff.email, PASSWORD))


@pytest.mark.django_db
def test_a_wrong_password_counts_even_when_recording_its_failure_breaks(staff, monkeypatch):
    # Otherwise an error after the check (the failure's own write) would be a free guess.
    database_fails_in(monkeypatch, "_failed")
    for _ in range(3):
        assert (
            Client(REMOTE_ADDR="203.0.113.31", raise_request_exception=False)
            .post("/admin/login/?next=/admin/", {"username": staff.email, "password": "wrong"})
            .status_code
            == 503
        )
    monkeypatch.undo()
    assert refused_as_throttled(sign_in("203.0.113.31", staff.email, PASSWORD))
