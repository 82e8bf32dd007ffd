"""Sign-in throttling per client address and per address + account, in Django's cache.

The per-account lockout (``failed_login_attempts``, ``locked_until``, accounts.backends)
stops guessing one account's password but not password spraying (a few guesses at each of
many accounts from one address), and it lets anyone lock anyone out. Two counters more:

* **address + account** (the email as typed, lower-cased, so an unknown email is counted
  like a known one): after ``SIGNIN_THROTTLE_ACCOUNT_FAILURES`` (3) failures that pair is
  refused until ``SIGNIN_THROTTLE_ACCOUNT_WINDOW`` (30 min) has passed since its last
  failure. With fewer failures than the lockout's 5 and a quiet time at least the lockout's
  30-minute reset window, one address can never lock an account: the account's count
  has started again before the pair may try again.
* **address**: ``SIGNIN_THROTTLE_ADDRESS_FAILURES`` (20) failures on any accounts within
  ``SIGNIN_THROTTLE_ADDRESS_WINDOW`` (15 min) block the address for
  ``SIGNIN_THROTTLE_BLOCK`` (60 s), doubled for each further block that day, up to
  ``SIGNIN_THROTTLE_MAX_BLOCK`` (1 h).

An attempt is counted before its password is checked (an atomic increment), so parallel
requests cannot slip past the limit; a success takes its count back, and so does an attempt
that ends with no answer on its password (the database failed mid-way). Attempts of one address +
account take turns (a lock in the cache, waited for up to ``SIGNIN_THROTTLE_WAIT`` seconds):
several tabs or clients signing in to one account at once would otherwise count each other's
unfinished attempts as failures and be refused with the right password. A refused attempt
checks no password and counts nothing. The client address is ``client_ip()``
(X-Forwarded-For only from ``TRUSTED_PROXIES``); an IPv6 client is counted by its /64, which
one host usually holds whole. Without a request (a sign-in from code) nothing is throttled.
State lives in the default cache: Redis shares it between workers and servers; the local
memory cache counts per process. docs/security.md has the reasoning.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from security.middleware import client_ip

PREFIX = "signin-throttle"
STRIKE_MEMORY = 24 * 3600  # how long earlier address blocks make the next one longer
LOCK_TTL = 60  # an attempt that died holding its pair's turn gives it up after this


@dataclass(frozen=True)
class Refusal:
    scope: str  # "address" or "address_account"
    retry_after: int  # seconds

    @property
    def message(self) -> str:
        minutes = max(1, -(-self.retry_after // 60))
        return f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}."


def _limit(name: str) -> int:
    return int(getattr(settings, name))


def address_key(address: str) -> str:
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class SigninThrottle:
    """The throttle of one sign-in attempt: ``refusal()`` first, then ``succeeded()`` or ``failed()``."""

    def __init__(self, request, email: str):
        address = client_ip(request) if request is not None else None
        try:
            self.address = address_key(address) if address else None
        except ValueError:
            self.address = None
        account = hashlib.sha256((email or "").strip().lower().encode()).hexdigest()[:32]
        self._address_count = f"{PREFIX}:a:{self.address}"
        self._address_block = f"{PREFIX}:ab:{self.address}"
        self._address_strikes = f"{PREFIX}:as:{self.address}"
        self._pair_count = f"{PREFIX}:p:{self.address}:{account}"
        self._pair_block = f"{PREFIX}:pb:{self.address}:{account}"
        self._pair_turn = f"{PREFIX}:pt:{self.address}:{account}"
        self._counted = False
        self._has_turn = False
        # Set once a password was checked and was wrong: that attempt counts even if recording
        # its failure breaks afterwards (else an error after the check would be a free guess).
        self.wrong_password_seen = False
        self.started: Refusal | None = None  # a block this attempt's failure started

    @property
    def active(self) -> bool:
        return self.address is not None

    def refusal(self) -> Refusal | None:
        """Why this attempt is refused without checking its password, or None (then it is counted)."""
        if not self.active:
            return None
        until = cache.get(self._address_block)
        if until is not None and until > time.time():
            return Refusal("address", int(until - time.time()) + 1)
        until = cache.get(self._pair_block)
        if until is not None and until > time.time():
            return Refusal("address_account", int(until - time.time()) + 1)
        if not self._take_turn():
            return Refusal("address_account", _limit("SIGNIN_THROTTLE_WAIT"))
        # Count now, before the password is checked: parallel attempts each see their own number.
        pair = self._increment(self._pair_count, _limit("SIGNIN_THROTTLE_ACCOUNT_WINDOW"))
        address = self._increment(self._address_count, _limit("SIGNIN_THROTTLE_ADDRESS_WINDOW"))
        self._counted = True
        # Over a limit here: attempts counted in parallel took the last ones.
        address_limit = _limit("SIGNIN_THROTTLE_ADDRESS_FAILURES")
        if address_limit and address > address_limit:
            self.abandon()
            return Refusal("address", _limit("SIGNIN_THROTTLE_BLOCK"))
        pair_limit = _limit("SIGNIN_THROTTLE_ACCOUNT_FAILURES")
        if pair_limit and pair > pair_limit:
            self.abandon()
            return Refusal("address_account", _limit("SIGNIN_THROTTLE_ACCOUNT_WINDOW"))
        return None

    def _take_turn(self) -> bool:
        deadline = time.monotonic() + _limit("SIGNIN_THROTTLE_WAIT")
        while not cache.add(self._pair_turn, 1, LOCK_TTL):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        self._has_turn = True
        return True

    def release(self) -> None:
        """End this attempt's turn (idempotent; succeeded() and failed() call it too)."""
        if self._has_turn:
            cache.delete(self._pair_turn)
            self._has_turn = False

    def succeeded(self) -> None:
        """The password was right: the pair starts again and the address gets its attempt back."""
        if self._counted:
            cache.delete(self._pair_count)
            self._uncount(self._address_count)
            self._counted = False
        self.release()

    def abandon(self) -> None:
        """The attempt ended without an answer on its password (refused after counting, or the
        database failed mid-way): it counts nothing. Without this, the sign-ins that met a
        database outage were failures, and an office behind one address found its accounts
        refused with the right password once the database was back. Idempotent."""
        if self._counted and not self.wrong_password_seen:
            self._uncount(self._pair_count)
            self._uncount(self._address_count)
        self._counted = False
        self.release()

    def failed(self) -> None:
        """Record the failure; sets ``started`` when it starts a block."""
        if not self._counted:
            return
        self._counted = False  # answered: abandon() no longer takes the count back
        try:
            self._record_failure()
        finally:
            self.release()

    def _record_failure(self) -> None:
        window = _limit("SIGNIN_THROTTLE_ACCOUNT_WINDOW")
        # The pair's quiet time runs from its last failure, now (after the account recorded its own).
        cache.touch(self._pair_count, window)
        pair_limit = _limit("SIGNIN_THROTTLE_ACCOUNT_FAILURES")
        if pair_limit and (cache.get(self._pair_count) or 0) >= pair_limit:
            cache.set(self._pair_block, time.time() + window, window)
            self.started = Refusal("address_account", window)
        address_limit = _limit("SIGNIN_THROTTLE_ADDRESS_FAILURES")
        if address_limit and (cache.get(self._address_count) or 0) >= address_limit:
            strikes = self._increment(self._address_strikes, STRIKE_MEMORY)
            seconds = min(_limit("SIGNIN_THROTTLE_BLOCK") * 2 ** (strikes - 1), _limit("SIGNIN_THROTTLE_MAX_BLOCK"))
            cache.set(self._address_block, time.time() + seconds, seconds)
            cache.delete(self._address_count)  # the next block takes as many failures again
            self.started = Refusal("address", seconds)

    @staticmethod
    def _uncount(key: str) -> None:
        try:
            if cache.decr(key) < 0:
                cache.delete(key)
        except ValueError:  # expired meanwhile
            pass

    @staticmethod
    def _increment(key: str, timeout: int) -> int:
        cache.add(key, 0, timeout)
        try:
            return cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout)
            return 1
