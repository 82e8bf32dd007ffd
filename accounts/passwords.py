"""Password rules from the organization's imported security settings (ASVS-style defaults)."""

from __future__ import annotations

from django.contrib.auth.hashers import check_password
from django.core.exceptions import ValidationError

from accounts.models import PasswordHistory
from settings_app.models import org_setting_values

DEFAULT_POLICY = {
    "password_min_length": 8,
    "password_max_length": 128,
    "password_history_count": 5,
    "account_lockout_enabled": True,
    "account_lockout_attempts": 5,
    "account_lockout_duration_minutes": 30,
    "account_lockout_reset_after_minutes": 30,
}


def password_policy(org_id) -> dict:
    """The organization's ``security.*`` settings merged over the defaults."""
    policy = dict(DEFAULT_POLICY)
    if org_id is None:
        return policy
    prefix = "security."
    for key, value in org_setting_values(org_id).items():
        if key.startswith(prefix):
            policy[key[len(prefix) :]] = value
    return policy


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class OrganizationPasswordPolicyValidator:
    """Minimum/maximum length and history reuse, per organization. No composition rules."""

    def validate(self, password, user=None):
        policy = password_policy(getattr(user, "org_id", None))
        minimum = max(_int(policy.get("password_min_length"), 8), 1)
        # ASVS: at least 64 characters must be allowed, whatever the organization says.
        maximum = max(_int(policy.get("password_max_length"), 128), 64, minimum)
        if len(password) < minimum:
            raise ValidationError(
                f"This password is too short. It must contain at least {minimum} characters.",
                code="password_too_short",
            )
        if len(password) > maximum:
            raise ValidationError(f"This password is longer than {maximum} characters.", code="password_too_long")
        history = max(_int(policy.get("password_history_count"), 0), 0)
        if user is not None and user.pk and history > 0:
            recent = PasswordHistory.all_orgs.filter(user_id=user.pk).order_by("-position")[:history]
            previous = [entry.password_hash for entry in recent]
            if user.password:
                previous.append(user.password)
            if any(check_password(password, encoded) for encoded in previous):
                raise ValidationError(
                    f"This password was used recently; choose one not among your last {history}.",
                    code="password_reused",
                )

    def get_help_text(self):
        return "Your password must follow your organization's length and history rules."
