"""The second factor, by AgentForge's rules, read from and written to ``mfa_settings``.

``mfa_settings`` is the one source of truth, so AgentForge and the admin agree on who has
MFA, with which secret and which backup codes:

* TOTP as AgentForge's pyotp defaults: RFC 6238, SHA-1, 6 digits, 30-second steps, one step
  of clock drift either way. ``last_used`` holds the start of the time step of the last
  accepted code; a code of that step or an earlier one is refused, so a code seen over a
  shoulder or in a proxy log cannot be used again.
* Backup codes: 8 upper-case hex characters, hashed like passwords (PBKDF2-SHA256, 100,000
  iterations, which ``legacy.format.passwords.to_legacy`` turns back into AgentForge's form);
  upper-cased with ``-`` and spaces removed before checking; each one works once.
* An organization requires MFA of its staff when ``require_mfa`` is set or its
  ``security.mfa_enforcement`` setting is ``required_admins`` or ``required_all``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import struct
import time
from urllib.parse import quote, urlencode

from django.contrib.auth.hashers import PBKDF2PasswordHasher, check_password
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import MFASettings, Organization
from accounts.passwords import password_policy
from agentforge_core.tenancy import unscoped
from agentforge_site.replicas import primary_only

TOTP_DIGITS = 6
TOTP_STEP = 30
TOTP_DRIFT_STEPS = 1
BACKUP_CODE_COUNT = 10
BACKUP_CODE_ITERATIONS = 100_000  # AgentForge's count: its verifier reads the count from the hash
ISSUER = "AgentForge"
ENFORCING_VALUES = {"required_admins", "required_all"}


# --- TOTP -----------------------------------------------------------------------------


def new_totp_secret() -> str:
    """32 base32 characters (160 bits), as pyotp.random_base32() gives AgentForge."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii")


def totp_code(secret: str, counter: int) -> str:
    key = base64.b32decode(secret.upper().replace(" ", "") + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**TOTP_DIGITS).zfill(TOTP_DIGITS)


def matching_counter(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step whose code ``code`` is (within the allowed drift), or None."""
    code = (code or "").strip().replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isdigit() or not secret:
        return None
    current = int((time.time() if now is None else now) // TOTP_STEP)
    try:
        found = None
        for counter in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
            if hmac.compare_digest(totp_code(secret, counter), code):
                found = counter  # no early exit: every candidate costs the same
        return found
    except (ValueError, TypeError):  # a secret that is not base32 never matches
        return None


def provisioning_uri(secret: str, email: str) -> str:
    """The otpauth:// address an authenticator app reads (what a QR code would hold)."""
    label = quote(f"{ISSUER}:{email}")
    return f"otpauth://totp/{label}?" + urlencode({"secret": secret, "issuer": ISSUER})


def _step_start(counter: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(counter * TOTP_STEP, tz=dt.timezone.utc)


def accept_totp(mfa: MFASettings, code: str, now: float | None = None) -> str:
    """``"ok"``, ``"reused"`` (right code, its step already used) or ``"wrong"``.

    The check-and-mark is one conditional UPDATE, so two requests racing with the same
    code cannot both pass.
    """
    counter = matching_counter(mfa.totp_secret, code, now)
    if counter is None:
        return "wrong"
    start = _step_start(counter)
    with unscoped():
        won = MFASettings.all_orgs.filter(Q(last_used__isnull=True) | Q(last_used__lt=start), pk=mfa.pk).update(
            last_used=start
        )
    if not won:
        return "reused"
    mfa.last_used = start
    return "ok"


# --- Backup codes ---------------------------------------------------------------------


def normalise_backup_code(code: str) -> str:
    return (code or "").upper().replace("-", "").replace(" ", "").strip()


def hash_backup_code(code: str) -> str:
    hasher = PBKDF2PasswordHasher()
    return hasher.encode(normalise_backup_code(code), hasher.salt(), iterations=BACKUP_CODE_ITERATIONS)


def new_backup_codes() -> list[str]:
    return [secrets.token_hex(4).upper() for _ in range(BACKUP_CODE_COUNT)]


def use_backup_code(mfa: MFASettings, code: str) -> bool:
    """True when ``code`` matches a stored backup code, which is then removed (single use)."""
    code = normalise_backup_code(code)
    if not code:
        return False
    with unscoped(), transaction.atomic():
        row = MFASettings.all_orgs.select_for_update().get(pk=mfa.pk)
        stored = list(row.backup_codes or [])
        for index, encoded in enumerate(stored):
            if check_password(code, encoded):
                del stored[index]
                MFASettings.all_orgs.filter(pk=row.pk).update(backup_codes=stored, last_used=timezone.now())
                mfa.backup_codes = stored
                return True
    return False


# --- Who needs what -------------------------------------------------------------------


def mfa_settings_of(user) -> MFASettings | None:
    with unscoped():
        return MFASettings.all_orgs.filter(user_id=user.pk).first()


def has_totp(mfa: MFASettings | None) -> bool:
    return bool(
        mfa is not None and mfa.is_active and "totp" in (mfa.methods or []) and mfa.totp_verified and mfa.totp_secret
    )


def org_requires_mfa(org_id) -> bool:
    if org_id is None:
        return False

    # From the primary: a replica seconds behind an admin who just required MFA would let the
    # next sign-in skip enrolment.
    with unscoped(), primary_only():
        org = Organization.all_orgs.filter(pk=org_id).values_list("require_mfa", flat=True).first()
    return bool(org) or password_policy(org_id).get("mfa_enforcement") in ENFORCING_VALUES


def admin_step_for(user) -> str | None:
    """What the admin asks after the password: ``"verify"``, ``"enrol"`` or nothing.

    ``"verify"`` when the user has usable MFA (a verified TOTP secret, or backup codes
    left on an otherwise active MFA); ``"enrol"`` when the organization requires MFA and
    the user has none the admin can check.
    """
    mfa = mfa_settings_of(user)
    if has_totp(mfa) or (mfa is not None and mfa.is_active and mfa.backup_codes):
        return "verify"
    if org_requires_mfa(user.org_id):
        return "enrol"
    return None


def start_enrolment(user) -> MFASettings:
    """Store a fresh, unverified secret (not yet MFA: ``is_active`` needs it verified)."""
    with unscoped():
        mfa = MFASettings.all_orgs.filter(user_id=user.pk).first() or MFASettings(org_id=user.org_id, user=user)
        mfa.totp_secret = new_totp_secret()
        mfa.totp_verified = False
        mfa.updated_at = timezone.now()
        mfa.save()
    return mfa


def confirm_enrolment(mfa: MFASettings, code: str) -> list[str] | None:
    """Turn TOTP on when ``code`` is right; returns the new backup codes (shown once)."""
    if accept_totp(mfa, code) != "ok":
        return None
    codes = new_backup_codes()
    with unscoped():
        mfa.refresh_from_db()
        mfa.enabled = True
        mfa.totp_verified = True
        mfa.methods = [*(m for m in (mfa.methods or []) if m != "totp"), "totp"]
        mfa.backup_codes = [hash_backup_code(c) for c in codes]
        mfa.backup_codes_generated_at = timezone.now()
        mfa.updated_at = timezone.now()
        mfa.save()  # the mfa_enabled audit entry comes from accounts.signals
    return codes
