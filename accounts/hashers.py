"""Which password hasher writes new hashes: AgentForge's PBKDF2 while a rollback is possible.

AgentForge's ``PasswordService`` verifies only ``<salt>$<iterations>$<hex key>`` (PBKDF2-HMAC-
SHA256 over the salt string's bytes, 32-byte key). Django's ``pbkdf2_sha256`` is the same
function, so every ``pbkdf2_sha256`` hash converts to that form without knowing the password
(``legacy.format.passwords.to_legacy``) and the exported or dual-written user can still sign in to
AgentForge. A bcrypt hash cannot be converted. So while the move can still be rolled back
(``LEGACY_ROLLBACK_POSSIBLE``, the default) new hashes, sign-in upgrades, changes and resets
are written with PBKDF2; once the operator declares the move final, bcrypt-SHA256 comes
first and each PBKDF2 hash is upgraded on that user's next sign-in. docs/security.md has the
trade-off.
"""

from __future__ import annotations

import hashlib
import time

from django.contrib.auth.hashers import get_hasher, get_hashers, identify_hasher, is_password_usable
from django.core.signals import setting_changed
from django.dispatch import receiver

PBKDF2 = "django.contrib.auth.hashers.PBKDF2PasswordHasher"
BCRYPT_SHA256 = "django.contrib.auth.hashers.BCryptSHA256PasswordHasher"
OTHERS = ["django.contrib.auth.hashers.Argon2PasswordHasher", "django.contrib.auth.hashers.ScryptPasswordHasher"]


def password_hashers(rollback_possible: bool) -> list[str]:
    """``PASSWORD_HASHERS``: the first one writes, all of them verify."""
    first, second = (PBKDF2, BCRYPT_SHA256) if rollback_possible else (BCRYPT_SHA256, PBKDF2)
    return [first, second, *OTHERS]


# --- A failed sign-in costs the same whatever the account's hash ---------------------------
#
# Django's harden_runtime pads a wrong password only up to the *preferred* hasher's cost, and
# not across hashers: an imported PBKDF2 hash of 100,000 iterations fails in a tenth of the
# time of a current one, a bcrypt hash in another time, an unknown email in a third. So work
# is counted here in one unit, PBKDF2-SHA256 iterations, and every failure is padded with
# PBKDF2 up to the costliest verification the configured hashers do at their settings. Other
# algorithms are measured against PBKDF2 in CPU time, once per process and hash form, so the
# ratio holds on a busy server.

PAD_PASSWORD = b"agentforge sign-in padding"
PAD_SALT = b"agentforge-pad"
_REFERENCE_ITERATIONS = 20_000
# The parameters that set a hash's cost (Django's decode() names), salt and digest aside.
COST_PARAMETERS = ("iterations", "work_factor", "time_cost", "memory_cost", "parallelism", "block_size")

_measured: dict[tuple, float] = {}
_failure_work: float | None = None


def _cpu_seconds(run) -> float:
    # This thread's CPU time, not the clock: on a loaded server a long measurement spans more
    # of other processes' time slices than a short one, and the clock would count them.
    started = time.thread_time()
    run()
    return time.thread_time() - started


def _measure(hasher, encoded: str) -> float:
    """The work of verifying ``encoded``, in PBKDF2 iterations: the median of five ratios, each
    of a reference and a verification timed back to back. A core shared with a busy neighbour
    (SMT, a noisy VM) stretches both halves of a pair alike; the minimum of each side, taken
    at different moments, can pair a quiet reference with a slowed verification and overstate
    the work, which then pads every other failure past the one it was measured on."""
    ratios = []
    for _ in range(5):
        reference = _cpu_seconds(lambda: hashlib.pbkdf2_hmac("sha256", PAD_PASSWORD, PAD_SALT, _REFERENCE_ITERATIONS))
        other = _cpu_seconds(lambda: hasher.verify(PAD_PASSWORD.decode(), encoded))
        ratios.append(other / max(reference, 1e-9))
    return sorted(ratios)[len(ratios) // 2] * _REFERENCE_ITERATIONS


def verification_work(encoded: str | None) -> float:
    """What verifying ``encoded`` costs, in PBKDF2-SHA256 iterations; 0 when nothing would be
    verified (an unusable password, an unknown algorithm, a hasher whose library is missing)."""
    if not encoded or not is_password_usable(encoded):
        return 0.0
    try:
        hasher = identify_hasher(encoded)
        decoded = hasher.decode(encoded)
    except (ValueError, TypeError):
        return 0.0
    if hasher.algorithm == "pbkdf2_sha256":
        return float(decoded["iterations"])
    key = (hasher.algorithm, *(decoded.get(name) for name in COST_PARAMETERS))
    if key not in _measured:
        _measured[key] = _measure(hasher, encoded)
    return _measured[key]


def failure_work() -> float:
    """The costliest verification among PASSWORD_HASHERS at their current settings."""
    global _failure_work
    if _failure_work is None:
        works = []
        for hasher in get_hashers():
            if hasher.algorithm == "pbkdf2_sha256":
                works.append(float(hasher.iterations))
                continue
            try:
                encoded = hasher.encode(PAD_PASSWORD.decode(), hasher.salt())
            except ValueError:  # its library is not installed: no hash of it can be verified either
                continue
            works.append(verification_work(encoded))
        _failure_work = max(works, default=0.0)
    return _failure_work


def pad_failure(spent: float) -> None:
    """After a failed sign-in that spent ``spent`` on verifications, spend the rest of
    ``failure_work()`` on PBKDF2, so the failure costs what the costliest one does."""
    missing = int(failure_work() - spent)
    if missing > 0:
        hashlib.pbkdf2_hmac("sha256", PAD_PASSWORD, PAD_SALT, missing)


def verify_password_work(user, raw_password: str) -> tuple[bool, float]:
    """``user.check_password(raw_password)`` that also returns the work it spent.

    Unlike Django's, a wrong password is not hardened here (pad_failure pads across hashers);
    a right one with an outdated hash is upgraded the same way, and an upgrade is not a
    password change (``_password`` cleared, see accounts.signals).
    """
    encoded = user.password
    work = verification_work(encoded)
    if not work:
        return False, 0.0
    hasher = identify_hasher(encoded)
    if not hasher.verify(raw_password, encoded):
        return False, work
    preferred = get_hasher("default")
    if hasher.algorithm != preferred.algorithm or preferred.must_update(encoded):
        user.set_password(raw_password)
        user._password = None
        user.save(update_fields=["password"])
    return True, work


@receiver(setting_changed, dispatch_uid="agentforge_reset_failure_work")
def _reset_failure_work(*, setting, **kwargs):
    global _failure_work
    if setting == "PASSWORD_HASHERS":
        _failure_work = None
