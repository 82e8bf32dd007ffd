"""Sign-in by email, with failure counting and account lockout.

An email is unique per organization, so several accounts may match; the password is
checked against each and the first account it opens wins. When none opens, every
matching account that was tried counts a failure; after the organization's
``account_lockout_attempts`` failures (5 by default) it is locked for
``account_lockout_duration_minutes`` (30). A failure older than
``account_lockout_reset_after_minutes`` (30) starts the count again. Every failure,
lockout and attempt on a locked account writes an audit entry (``login_failed``) and a
security event. The admin login goes through here too.

Statuses follow AgentForge's login: a pending (email not verified), suspended or inactive
account is refused even with the right password, and only then is the reason given
(``login_refusal``, shown by the admin login form); a wrong password gets the same answer
as an unknown email, and every failure costs the same work whatever the account's hash
(``accounts.hashers.pad_failure``).
"""

from __future__ import annotations

import contextvars
import datetime as dt

from django.contrib.auth.backends import ModelBackend
from django.db.models import F
from django.utils import timezone

from accounts.hashers import pad_failure, verify_password_work
from accounts.models import User
from accounts.passwords import password_policy
from accounts.signals import failure_recorded
from accounts.throttle import SigninThrottle
from accounts.tokens import end_sessions
from security.audit import record_auth_event, record_security_event
from security.models import SecurityEvent


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def lockout_policy(org_id) -> dict:
    policy = password_policy(org_id)
    return {
        "enabled": bool(policy.get("account_lockout_enabled", True)),
        "attempts": max(_int(policy.get("account_lockout_attempts"), 5), 1),
        "minutes": max(_int(policy.get("account_lockout_duration_minutes"), 30), 1),
        "reset_after": max(_int(policy.get("account_lockout_reset_after_minutes"), 30), 0),
    }


# AgentForge's login refuses these statuses with these answers (403). They are given only to
# whoever knows the password: otherwise the answer stays the one for an unknown email.
REFUSED_STATUSES = {
    User.Status.PENDING: "Please verify your email first.",
    User.Status.SUSPENDED: "Account suspended. Contact administrator.",
    User.Status.INACTIVE: "This account is inactive. Contact administrator.",
}
# The reason the last authenticate() refused a right password (None otherwise), for the login form.
login_refusal: contextvars.ContextVar = contextvars.ContextVar("agentforge_login_refusal", default=None)


class EmailBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, email=None, org=None, **kwargs):
        failure_recorded.set(False)
        login_refusal.set(None)
        email = email or username or kwargs.get(User.USERNAME_FIELD)
        if not email or password is None:
            return None
        throttle = SigninThrottle(request, email)
        refusal = throttle.refusal()
        if refusal is not None:
            self._refused_throttled(email, refusal, request)
            login_refusal.set(refusal.message)
            failure_recorded.set(True)
            return None
        try:
            return self._authenticate_counted(request, email, password, org, throttle)
        finally:
            # Neither right nor wrong (the database failed mid-way): the attempt counts nothing.
            throttle.abandon()

    def _authenticate_counted(self, request, email, password, org, throttle):
        candidates = User.all_orgs.by_email(email).select_related("org")
        if org is not None:
            candidates = candidates.for_org(org)
        candidates = list(candidates)
        tried, locked, refused = [], [], []
        spent = 0.0  # verification work, in PBKDF2 iterations (accounts.hashers)
        for user in candidates:
            if user.is_locked:
                locked.append(user)
                continue
            if user.status not in REFUSED_STATUSES and not self.user_can_authenticate(user):
                continue
            correct, work = self.verify_password(user, password)
            spent += work
            if correct:
                if user.status in REFUSED_STATUSES:
                    refused.append(user)
                    continue
                self._succeeded(user)
                throttle.succeeded()
                return user
            throttle.wrong_password_seen = True
            tried.append(user)
        if not refused:
            # Unknown email, locked or inactive account, cheap or foreign hash: every failure
            # costs what the costliest verification does, so its time reveals nothing.
            self.pad_failure(spent)
        for user in tried:
            self._failed(user, request)
        for user in locked:
            self._refused_locked(user, request)
        for user in refused:
            self._refused_status(user, request)
        if refused:
            login_refusal.set(REFUSED_STATUSES[refused[0].status])
        # After the accounts' own failures are recorded: the pair's quiet time runs from now.
        throttle.failed()
        if throttle.started is not None:
            self._throttle_started(email, throttle, tried + locked + refused, request)
        # An unknown email's failure is recorded by accounts.signals (user_login_failed).
        failure_recorded.set(bool(tried or locked or refused))
        return None

    # The two halves of equal-cost failures, methods so that a benchmark can swap them.
    verify_password = staticmethod(verify_password_work)
    pad_failure = staticmethod(pad_failure)

    def user_can_authenticate(self, user):
        return super().user_can_authenticate(user) and not user.is_locked

    def get_user(self, user_id):
        user = User.all_orgs.filter(pk=user_id).first()
        return user if user is not None and self.user_can_authenticate(user) else None

    # --- bookkeeping ------------------------------------------------------------------

    @staticmethod
    def _succeeded(user) -> None:
        if user.failed_login_attempts or user.locked_until is not None or user.status == User.Status.LOCKED:
            changes = {"failed_login_attempts": 0, "locked_until": None}
            if user.status == User.Status.LOCKED:
                changes["status"] = User.Status.ACTIVE
            User.all_orgs.filter(pk=user.pk).update(**changes)
            for name, value in changes.items():
                setattr(user, name, value)

    @staticmethod
    def _last_failure(user):
        return (
            SecurityEvent.all_orgs.filter(user_id=user.pk, event_type=SecurityEvent.EventType.LOGIN_FAILED)
            .order_by("-created_at")
            .values_list("created_at", flat=True)
            .first()
        )

    def _failed(self, user, request, reason: str = "invalid_password", error: str = "invalid password") -> None:
        """Count a failure toward the lockout (a wrong password, or a wrong second factor)."""
        policy = lockout_policy(user.org_id)
        now = timezone.now()
        rows = User.all_orgs.filter(pk=user.pk)
        last = self._last_failure(user)
        if (
            policy["reset_after"]
            and user.failed_login_attempts
            and (last is None or last < now - dt.timedelta(minutes=policy["reset_after"]))
        ):
            rows.update(failed_login_attempts=0)
        rows.update(failed_login_attempts=F("failed_login_attempts") + 1)
        attempts = rows.values_list("failed_login_attempts", flat=True).first() or 0
        user.failed_login_attempts = attempts
        details = {"reason": reason, "attempts": attempts}
        record_auth_event("login_failed", user=user, success=False, request=request, error=error, details=details)
        record_security_event(SecurityEvent.EventType.LOGIN_FAILED, user=user, request=request, details=details)
        if policy["enabled"] and attempts >= policy["attempts"]:
            until = now + dt.timedelta(minutes=policy["minutes"])
            rows.update(locked_until=until, status=User.Status.LOCKED)
            user.locked_until, user.status = until, User.Status.LOCKED
            end_sessions(user, "account_locked")
            lock = {
                "reason": "lockout",
                "attempts": attempts,
                "locked_until": until.isoformat(),
                "lockout_minutes": policy["minutes"],
            }
            record_auth_event(
                "login_failed", user=user, success=False, request=request, error="account locked", details=lock
            )
            record_security_event(
                SecurityEvent.EventType.ACCOUNT_LOCKED,
                user=user,
                request=request,
                severity=SecurityEvent.Severity.CRITICAL,
                details=lock,
            )

    @staticmethod
    def _refused_status(user, request) -> None:
        details = {"reason": f"account_{user.status}"}
        record_auth_event(
            "login_failed",
            user=user,
            success=False,
            request=request,
            error=REFUSED_STATUSES[user.status],
            details=details,
        )
        record_security_event(SecurityEvent.EventType.LOGIN_FAILED, user=user, request=request, details=details)

    @staticmethod
    def _refused_locked(user, request) -> None:
        details = {"reason": "account_locked", "locked_until": user.locked_until.isoformat()}
        record_auth_event(
            "login_failed", user=user, success=False, request=request, error="account locked", details=details
        )
        record_security_event(SecurityEvent.EventType.LOCKED_LOGIN_ATTEMPT, user=user, request=request, details=details)

    @staticmethod
    def _refused_throttled(email, refusal, request) -> None:
        # No account is looked up for a refused attempt: the entry names the email as typed.
        details = {"reason": "throttled", "scope": refusal.scope, "retry_after": refusal.retry_after}
        record_auth_event(
            "login_failed",
            email=str(email)[:254],
            success=False,
            request=request,
            error="too many failed sign-ins",
            details=details,
        )

    @staticmethod
    def _throttle_started(email, throttle, users, request) -> None:
        block = throttle.started
        details = {
            "reason": "signin_throttled",
            "scope": block.scope,
            "blocked_seconds": block.retry_after,
            "address": throttle.address,
        }
        severity = SecurityEvent.Severity.CRITICAL if block.scope == "address" else SecurityEvent.Severity.WARNING
        for user in users or [None]:
            record_auth_event(
                "login_failed",
                user=user,
                email=str(email)[:254],
                success=False,
                request=request,
                error="sign-in throttled",
                details=details,
            )
            record_security_event(
                SecurityEvent.EventType.SUSPICIOUS_ACTIVITY,
                user=user,
                email=str(email)[:254],
                request=request,
                severity=severity,
                details=details,
            )
