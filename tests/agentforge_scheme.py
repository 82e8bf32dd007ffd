"""AgentForge's own password check, written again from the format reference (§8) for the tests.

Deliberately independent of ``legacy.passwords``: a hash the exporter writes must verify here,
exactly as AgentForge's ``PasswordService.verify_password`` would verify it after a rollback.
"""

from __future__ import annotations

import hashlib
import hmac


def agentforge_verify(password: str, stored) -> bool:
    """``<salt>$<iterations>$<hex>`` or ``<salt>$<hex>`` (100,000); anything else never matches."""
    try:
        parts = stored.split("$")
        if len(parts) == 2:
            salt, key_hex = parts
            iterations = 100_000
        else:
            salt, iterations_text, key_hex = parts
            iterations = int(iterations_text)
        key = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("utf-8"), iterations)
        return hmac.compare_digest(key.hex(), key_hex)
    except Exception:  # noqa: BLE001 - AgentForge treats every error as "no match"
        return False


def agentforge_backup_code_matches(code: str, stored_codes) -> bool:
    """AgentForge normalises a backup code (upper case, no '-' or spaces) before checking it."""
    normalised = code.upper().replace("-", "").replace(" ", "")
    return any(agentforge_verify(normalised, stored) for stored in stored_codes or [])
