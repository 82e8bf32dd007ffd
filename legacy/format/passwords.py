"""Lossless conversion of AgentForge PBKDF2 hashes (docs/legacy-format.md §8) to Django's pbkdf2_sha256.

Legacy: ``<salt 64 hex>$<iterations>$<key hex>`` or the older ``<salt>$<key hex>`` (100,000
iterations). The KDF salt is the salt *string's* bytes, which is what Django's
PBKDF2PasswordHasher uses too, so the conversion only re-encodes the key:
``pbkdf2_sha256$<iterations>$<salt>$<base64(bytes.fromhex(key))>``. Django's
``check_password`` then accepts the old password and upgrades the hash on login.
"""

from __future__ import annotations

import base64
import binascii
import re

LEGACY_DEFAULT_ITERATIONS = 100_000
DJANGO_ALGORITHM = "pbkdf2_sha256"
UNUSABLE = "!"  # Django's UNUSABLE_PASSWORD_PREFIX; deterministic so re-runs converge
_HEX = re.compile(r"^[0-9a-fA-F]+$")


class HashFormatError(ValueError):
    pass


def to_django(legacy: str) -> tuple[str, bool]:
    """Return ``(django_hash, two_part)``; raise HashFormatError for an unusable value."""
    if not isinstance(legacy, str) or not legacy:
        raise HashFormatError("empty hash")
    parts = legacy.split("$")
    if len(parts) == 2:
        salt, key_hex = parts
        iterations, two_part = LEGACY_DEFAULT_ITERATIONS, True
    elif len(parts) == 3:
        salt, iterations_text, key_hex = parts
        if not iterations_text.isdigit() or int(iterations_text) <= 0:
            raise HashFormatError(f"iteration count {iterations_text!r} is not a positive integer")
        if str(int(iterations_text)) != iterations_text:
            raise HashFormatError(f"iteration count {iterations_text!r} is not in canonical form")
        iterations, two_part = int(iterations_text), False
    else:
        raise HashFormatError(f"expected 2 or 3 parts separated by '$', got {len(parts)}")
    if not salt or "$" in salt:
        raise HashFormatError("empty salt")
    if not _HEX.match(key_hex) or len(key_hex) % 2 or key_hex != key_hex.lower():
        raise HashFormatError("derived key is not lowercase hex")
    try:
        raw = binascii.unhexlify(key_hex)
    except binascii.Error as exc:  # pragma: no cover - guarded by the regex
        raise HashFormatError(str(exc)) from None
    encoded = base64.b64encode(raw).decode("ascii")
    return f"{DJANGO_ALGORITHM}${iterations}${salt}${encoded}", two_part


def to_legacy(django_hash: str, two_part_salts=()) -> str | None:
    """Back to the legacy string, or None when the Django hash has no legacy form."""
    if not isinstance(django_hash, str) or not django_hash.startswith(DJANGO_ALGORITHM + "$"):
        return None
    try:
        _, iterations, salt, encoded = django_hash.split("$", 3)
        key_hex = base64.b64decode(encoded.encode("ascii"), validate=True).hex()
    except (ValueError, binascii.Error):
        return None
    if salt in two_part_salts and iterations == str(LEGACY_DEFAULT_ITERATIONS):
        return f"{salt}${key_hex}"
    return f"{salt}${iterations}${key_hex}"


def salt_of(django_hash: str) -> str | None:
    parts = django_hash.split("$") if isinstance(django_hash, str) else []
    return parts[2] if len(parts) == 4 else None
