"""Authentication events into the audit trail; password history and MFA changes.

Connected from ``AccountsConfig.ready()``. Django sends ``user_logged_in``/``user_logged_out``
from ``login()``/``logout()`` (the admin uses them too) and ``user_login_failed`` from
``authenticate()`` when every backend refused. Failures that ``EmailBackend`` already
recorded (with the account and the reason) are not written twice.
"""

from __future__ import annotations

import contextvars

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone

from accounts.models import MFASettings, PasswordHistory, User
from accounts.passwords import password_policy
from accounts.tokens import end_sessions, session_end_reason
from security.audit import record_auth_event, record_security_event
from security.middleware import client_ip

# Set by EmailBackend when it has written the failure entries of the current authenticate().
failure_recorded: contextvars.ContextVar = contextvars.ContextVar("agentforge_failure_recorded", default=False)


@receiver(user_logged_in, dispatch_uid="agentforge_audit_login")
def audit_login(sender, request, user, **kwargs):
    ip = client_ip(request) if request is not None else None
    if ip and isinstance(user, User) and user.pk:
        User.all_orgs.filter(pk=user.pk).update(last_login_ip=ip)
    # AgentForge's login entries say whether a second factor was used (``mfa_used``).
    method = getattr(request, "mfa_used", None)
    details = {"mfa_used": True, "mfa_method": method} if method else None
    record_auth_event("login", user=user, request=request, details=details)


@receiver(user_logged_out, dispatch_uid="agentforge_audit_logout")
def audit_logout(sender, request, user, **kwargs):
    if user is None:
        return  # nobody was signed in
    record_auth_event("logout", user=user, request=request)


@receiver(user_login_failed, dispatch_uid="agentforge_audit_login_failed")
def audit_login_failed(sender, credentials, request=None, **kwargs):
    if failure_recorded.get():
        failure_recorded.set(False)
        return
    email = str(credentials.get("email") or credentials.get("username") or "")[:254]
    details = {"reason": "unknown_user"}
    record_auth_event(
        "login_failed", email=email, success=False, request=request, error="invalid credentials", details=details
    )
    record_security_event("login_failed", email=email, request=request, details=details)


# --- Password history and password-change entries ------------------------------------


@receiver(pre_save, sender=User, dispatch_uid="agentforge_password_pre_save")
def _remember_previous_password(sender, instance, raw=False, **kwargs):
    # ``_password`` is set by set_password() and cleared after the save; the hash upgrade
    # done by check_password() clears it before saving, so upgrades are not changes.
    if raw or getattr(instance, "_password", None) is None:
        return
    instance._agentforge_password_changed = True
    instance._agentforge_previous_hash = None
    if not instance._state.adding:
        instance._agentforge_previous_hash = (
            User.all_orgs.filter(pk=instance.pk).values_list("password", flat=True).first()
        )


@receiver(post_save, sender=User, dispatch_uid="agentforge_password_post_save")
def _record_password_change(sender, instance, created, raw=False, **kwargs):
    if raw or not getattr(instance, "_agentforge_password_changed", False):
        return
    instance._agentforge_password_changed = False
    now = timezone.now()
    instance.password_changed_at = now
    # A reset link mailed before the change must not undo it (say the mailbox was read by
    # someone else, and the user changed the password to lock them out).
    instance.reset_password_token_hash = instance.reset_password_expires = None
    User.all_orgs.filter(pk=instance.pk).update(
        password_changed_at=now, reset_password_token_hash=None, reset_password_expires=None
    )
    if created:
        return
    previous = instance._agentforge_previous_hash
    if previous and previous != instance.password:
        record_password_history(instance, previous)

    action = getattr(instance, "_agentforge_password_action", None) or "password_change"
    instance._agentforge_password_action = None
    actor = getattr(instance, "_agentforge_password_actor", None)
    instance._agentforge_password_actor = None
    record_auth_event(action, user=instance, actor=actor)
    end_sessions(instance, action, actor=actor)


@receiver(post_save, sender=User, dispatch_uid="agentforge_end_sessions_post_save")
def _end_sessions_of_disabled_user(sender, instance, created, raw=False, **kwargs):
    # Deactivated, suspended, back to pending or locked (the admin's lock action, a form, a
    # store save): the platform sessions end now. accounts.tokens.get_session catches the rest.
    if raw or created:
        return
    reason = session_end_reason(instance)
    if reason is not None:
        end_sessions(instance, reason)


def record_password_history(user, encoded: str) -> None:
    """Keep ``encoded`` (a superseded hash) in password_history, trimmed to the policy's count."""
    from django.contrib.auth.hashers import is_password_usable

    if not encoded or not is_password_usable(encoded):
        return
    keep = max(int(password_policy(user.org_id).get("password_history_count") or 0), 0)
    history = PasswordHistory.all_orgs.filter(user_id=user.pk)
    last = history.order_by("-position").values_list("position", flat=True).first()
    PasswordHistory.all_orgs.create(
        org_id=user.org_id,
        user_id=user.pk,
        password_hash=encoded,
        position=0 if last is None else last + 1,
        created_at=timezone.now(),
    )
    stale = list(history.order_by("-position").values_list("pk", flat=True)[keep:])
    if stale:
        PasswordHistory.all_orgs.filter(pk__in=stale).delete()


# --- MFA enabled / disabled -----------------------------------------------------------


@receiver(pre_save, sender=MFASettings, dispatch_uid="agentforge_mfa_pre_save")
def _remember_mfa_state(sender, instance, raw=False, **kwargs):
    if raw:
        return
    was = None
    if instance.pk is not None and not instance._state.adding:
        was = MFASettings.all_orgs.filter(pk=instance.pk).values_list("enabled", flat=True).first()
    instance._agentforge_mfa_was_enabled = bool(was)


@receiver(post_save, sender=MFASettings, dispatch_uid="agentforge_mfa_post_save")
def _record_mfa_change(sender, instance, raw=False, **kwargs):
    if raw:
        return
    was = getattr(instance, "_agentforge_mfa_was_enabled", False)
    if bool(instance.enabled) == was:
        return

    user = User.all_orgs.filter(pk=instance.user_id).first()
    record_auth_event(
        "mfa_enabled" if instance.enabled else "mfa_disabled",
        user=user,
        org_id=instance.org_id,
        details={"methods": list(instance.methods or [])},
    )
