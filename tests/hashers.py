"""Production's password hashers at a fraction of their cost, for tests that are not about cost.

Same algorithms, same encoded forms (``pbkdf2_sha256$<iterations>$…`` converts to AgentForge's
form and upgrades on sign-in exactly as in production), only fewer iterations and rounds: a
PBKDF2 hash at Django's 1,000,000 iterations costs about half a second here, and the failure
padding (accounts.hashers) spends that on every wrong password. tests/test_signin_timing.py
runs the production hashers themselves.
"""

from django.contrib.auth.hashers import BCryptSHA256PasswordHasher, PBKDF2PasswordHasher, ScryptPasswordHasher

from accounts.hashers import BCRYPT_SHA256, PBKDF2, password_hashers

SCRYPT = "django.contrib.auth.hashers.ScryptPasswordHasher"


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1_000


class QuickBCryptSHA256PasswordHasher(BCryptSHA256PasswordHasher):
    rounds = 4  # bcrypt's minimum


class QuickScryptPasswordHasher(ScryptPasswordHasher):
    # Configured to verify only, but the failure padding pads every wrong password up to its
    # cost: at Django's 2**14 that is 700,000 PBKDF2 iterations' worth.
    work_factor = 2**8


_QUICK = {
    PBKDF2: f"{__name__}.QuickPBKDF2PasswordHasher",
    BCRYPT_SHA256: f"{__name__}.QuickBCryptSHA256PasswordHasher",
    SCRYPT: f"{__name__}.QuickScryptPasswordHasher",
}


def quick_password_hashers(rollback_possible: bool) -> list[str]:
    """``accounts.hashers.password_hashers`` with the quick twins in the same order."""
    return [_QUICK.get(path, path) for path in password_hashers(rollback_possible)]
