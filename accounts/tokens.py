"""One-time tokens and login sessions, stored only as SHA-256 digests.

The plaintext is returned once, to be mailed or handed to the client; the database keeps
``sha256_hex(token)`` and an expiry. Tokens carry 256 random bits, so a digest lookup is
safe (no timing oracle on the secret) and the stored digest is useless to a reader.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets

from django.db import transaction
from django.utils import timezone

from accounts.models import User, UserSession
from accounts.services import change_password
from agentforge_core.crypto import sha256_hex
from agentforge_core.models import check_org_for_write, held_to_active_org
from security.audit import record_auth_event, record_security_event
from security.middleware import request_context
from security.models import SecurityEvent

RESET_TOKEN_TTL = dt.timedelta(hours=1)
VERIFICATION_TOKEN_TTL = dt.timedelta(hours=48)
SESSION_TTL = dt.timedelta(minutes=480)  # the legacy session_timeout_minutes default


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _matches(stored: str | None, token: str) -> bool:
    return bool(stored) and hmac.compare_digest(stored, sha256_hex(token))


# Inside an organization, tokens and sessions are looked up among its rows only
# (held_to_active_org: what row-level security does on PostgreSQL; elsewhere another
# organization's token was found and its use failed half-way), and issued to its users only
# (check_org_for_write, as create_session's row is checked: PostgreSQL stored nothing and
# returned a token that never worked, the others stored it).


# --- password reset --------------------------------------------------------------------


def issue_password_reset_token(user, ttl: dt.timedelta = RESET_TOKEN_TTL, request=None) -> str:
    """A new reset token for ``user`` (replacing any earlier one); returns the plaintext."""
    check_org_for_write(user)
    token = new_token()
    user.reset_password_token_hash = sha256_hex(token)
    user.reset_password_expires = timezone.now() + ttl
    User.all_orgs.filter(pk=user.pk).update(
        reset_password_token_hash=user.reset_password_token_hash, reset_password_expires=user.reset_password_expires
    )
    record_security_event(
        SecurityEvent.EventType.PASSWORD_RESET_REQUESTED,
        user=user,
        request=request,
        severity=SecurityEvent.Severity.INFO,
        details={"expires": user.reset_password_expires.isoformat()},
    )
    return token


def user_for_reset_token(token: str):
    """The user whose unexpired reset token this is, or None."""
    if not token:
        return None
    user = held_to_active_org(User.all_orgs.filter(reset_password_token_hash=sha256_hex(token))).first()
    if user is None or not _matches(user.reset_password_token_hash, token):
        return None
    if user.reset_password_expires is None or user.reset_password_expires <= timezone.now():
        return None
    return user


def reset_password(token: str, new_password: str):
    """Set a new password with a reset token; returns the user, or None for a bad token.

    Raises ValidationError when the policy refuses the password (the token stays valid).
    The token is used up; a successful reset also lifts a lockout.
    """
    user = user_for_reset_token(token)
    if user is None:
        return None
    with transaction.atomic():  # a refused password rolls the token's use back: it stays valid
        if not _use_up(user, token, "reset_password_token_hash", "reset_password_expires"):
            return None
        change_password(user, new_password, actor=user, action="password_reset", save=False)
        user.reset_password_token_hash = None
        user.reset_password_expires = None
        user.failed_login_attempts = 0
        user.locked_until = None
        if user.status == User.Status.LOCKED:
            user.status = User.Status.ACTIVE
        user.save()
    return user


def _use_up(user, token: str, digest_field: str, expiry_field: str) -> bool:
    """Withdraw ``user``'s token in one conditional UPDATE. Of two requests racing with the same
    token, both found the user; only the one whose UPDATE still finds the digest goes on."""
    held = User.all_orgs.filter(pk=user.pk, **{digest_field: sha256_hex(token)})
    return held.update(**{digest_field: None, expiry_field: None}) == 1


# --- email verification ----------------------------------------------------------------


def issue_verification_token(user, ttl: dt.timedelta = VERIFICATION_TOKEN_TTL) -> str:
    check_org_for_write(user)
    token = new_token()
    user.verification_token_hash = sha256_hex(token)
    user.verification_token_expires = timezone.now() + ttl
    User.all_orgs.filter(pk=user.pk).update(
        verification_token_hash=user.verification_token_hash,
        verification_token_expires=user.verification_token_expires,
    )
    return token


def user_for_verification_token(token: str):
    """The user whose unexpired verification token this is, or None."""
    if not token:
        return None
    user = held_to_active_org(User.all_orgs.filter(verification_token_hash=sha256_hex(token))).first()
    if user is None or not _matches(user.verification_token_hash, token):
        return None
    if user.verification_token_expires is None or user.verification_token_expires <= timezone.now():
        return None
    return user


def verify_email(token: str):
    """Mark the email of the token's user verified (pending -> active); None for a bad token."""
    user = user_for_verification_token(token)
    if user is None:
        return None
    with transaction.atomic():
        if not _use_up(user, token, "verification_token_hash", "verification_token_expires"):
            return None
        user.email_verified = True
        user.verification_token_hash = None
        user.verification_token_expires = None
        if user.status == User.Status.PENDING:
            user.status = User.Status.ACTIVE
        user.save()
    return user


# --- login sessions ----------------------------------------------------------------------


def create_session(user, *, ttl: dt.timedelta = SESSION_TTL, remember_me: bool = False, mfa_verified: bool = False):
    """A UserSession for ``user``; returns ``(session, plaintext_token)``."""
    ctx = request_context()
    token = new_token()
    now = timezone.now()
    session = UserSession.all_orgs.create(
        org_id=user.org_id,
        user=user,
        token_hash=sha256_hex(token),
        ip_address=ctx.get("ip_address"),
        user_agent=ctx.get("user_agent") or "",
        remember_me=remember_me,
        mfa_verified=mfa_verified,
        created_at=now,
        last_seen_at=now,
        expires_at=now + ttl,
    )
    return session, token


def get_session(token: str):
    """The live (not expired, not revoked) session of this token, or None; touches last_seen_at.

    A session also ends here when its user may no longer hold one (``session_end_reason``):
    a change made with ``update()`` or by the importer sends no signal to end it earlier.
    """
    if not token:
        return None
    now = timezone.now()
    session = (
        held_to_active_org(
            UserSession.all_orgs.filter(token_hash=sha256_hex(token), revoked_at__isnull=True, expires_at__gt=now)
        )
        .select_related("user")
        .first()
    )
    if session is None or not _matches(session.token_hash, token):
        return None
    reason = session_end_reason(session.user, since=session.created_at)
    if reason is not None:
        end_sessions(session.user, reason)
        return None
    UserSession.all_orgs.filter(pk=session.pk).update(last_seen_at=now)
    return session


def session_end_reason(user, since=None) -> str | None:
    """Why ``user``'s sessions (those created at ``since``) must end, or None.

    An account that is not active (inactive, suspended, pending) or is locked holds none;
    neither does a session older than the user's last password change or reset.
    """
    if user.status not in (User.Status.ACTIVE, User.Status.LOCKED):
        return f"account_{user.status}"
    if user.is_locked:
        return "account_locked"
    if since is not None and user.password_changed_at is not None and user.password_changed_at > since:
        return "password_changed"
    return None


def end_sessions(user, reason: str, *, actor=None) -> int:
    """Revoke every live session of ``user``; when there were any, an audit entry
    (``sessions_revoked``) gives ``reason`` and how many. Returns how many."""
    now = timezone.now()
    ended = UserSession.all_orgs.filter(user_id=user.pk, revoked_at__isnull=True, expires_at__gt=now).update(
        revoked_at=now
    )
    if ended:
        record_auth_event("sessions_revoked", user=user, actor=actor, details={"reason": reason, "sessions": ended})
    return ended


def revoke_session(token: str) -> bool:
    return bool(
        held_to_active_org(UserSession.all_orgs.filter(token_hash=sha256_hex(token), revoked_at__isnull=True)).update(
            revoked_at=timezone.now()
        )
    )
