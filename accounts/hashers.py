"""Which password hasher writes new hashes: AgentForge's PBKDF2 while a rollback is possible.

AgentForge's ``PasswordService`` verifies only ``<salt>$<iterations>$<hex key>`` (PBKDF2-HMAC-
SHA256 over the salt string's bytes, 32-byte key). Django's ``pbkdf2_sha256`` is the same
function, so every ``pbkdf2_sha256`` hash converts to that form without knowing the password
(``legacy.passwords.to_legacy``) and the exported or dual-written user can still sign in to
AgentForge. A bcrypt hash cannot be converted. So while the move can still be rolled back
(``LEGACY_ROLLBACK_POSSIBLE``, the default) new hashes, sign-in upgrades, changes and resets
are written with PBKDF2; once the operator declares the move final, bcrypt-SHA256 comes
first and each PBKDF2 hash is upgraded on that user's next sign-in. docs/security.md has the
trade-off.
"""

from __future__ import annotations

PBKDF2 = "django.contrib.auth.hashers.PBKDF2PasswordHasher"
BCRYPT_SHA256 = "django.contrib.auth.hashers.BCryptSHA256PasswordHasher"
OTHERS = ["django.contrib.auth.hashers.Argon2PasswordHasher", "django.contrib.auth.hashers.ScryptPasswordHasher"]


def password_hashers(rollback_possible: bool) -> list[str]:
    """``PASSWORD_HASHERS``: the first one writes, all of them verify."""
    first, second = (PBKDF2, BCRYPT_SHA256) if rollback_possible else (BCRYPT_SHA256, PBKDF2)
    return [first, second, *OTHERS]
