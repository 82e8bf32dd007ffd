"""Production's password hashers at a fraction of their cost, for tests that are not about cost.

Same algorithms, same encoded forms (``pbkdf2_sha256$<iterations>$…`` converts to AgentForge's
form and upgrades on sign-in exactly as in production), only fewer iterations and rounds: a
PBKDF2 hash at Django's 1,000,000 iterations costs about half a second here, and the failure
padding (accounts.hashers) spends that on every wrong password. tests/test_signin_timing.py
runs the production hashers themselves.
"""

from django.contrib.auth.hashers import BCryptSHA256PasswordHasher, PBKDF2PasswordHasher

from accounts.hashers import BCRYPT_SHA256, PBKDF2, password_hashers


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1_000


class QuickBCryptSHA256PasswordHasher(BCryptSHA256PasswordHasher):
    rounds = 4  # bcrypt's minimum


_QUICK = {PBKDF2: f"{__name__}.QuickPBKDF2PasswordHasher", BCRYPT_SHA256: f"{__name__}.QuickBCryptSHA256PasswordHasher"}


def quick_password_hashers(rollback_possible: bool) -> list[str]:
    """``accounts.hashers.password_hashers`` with the quick twins in the same order."""
    return [_QUICK.get(path, path) for path in password_hashers(rollback_possible)]
