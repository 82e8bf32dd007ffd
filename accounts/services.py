"""Account operations that must keep the security bookkeeping right."""

from __future__ import annotations

from django.contrib.auth import password_validation


def change_password(user, new_password: str, actor=None, *, action: str = "password_change", save: bool = True):
    """Validate ``new_password`` against the organization's policy and set it.

    Raises django.core.exceptions.ValidationError when the policy refuses it (length,
    reuse of the last N passwords, common or too similar). The superseded hash goes to
    ``password_history`` (trimmed to the policy's count), ``password_changed_at`` is set
    and an audit entry (``password_change``, or ``password_reset`` for the reset flow)
    names ``actor`` (default: the signed-in user of the request, else the user). The
    history and the audit entry come from the User save signals, so Django's own
    password forms (admin, SetPasswordForm) get the same treatment.
    """
    password_validation.validate_password(new_password, user)
    user.set_password(new_password)
    user.must_change_password = False
    user._agentforge_password_action = action
    user._agentforge_password_actor = actor
    if save:
        user.save()
    return user


def ensure_superuser(email: str, password: str, org=None):
    """The superuser ``email`` of ``org`` (default: the default organization) with ``password``:
    created when missing, else made staff and superuser again with the new password.
    Returns ``(user, created)``. What ``scripts/quickstart`` runs on every start."""
    from accounts.models import Organization, User

    org = org or Organization.get_default()
    user = User.all_orgs.for_org(org).by_email(email).first()
    if user is None:
        return User.all_orgs.create_superuser(email, password, org=org), True
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return user, False
