from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from agentforge_core.models import OrgOwnedModel, org_foreign_key, org_index


class SecurityEvent(OrgOwnedModel):
    """Failed logins, lockouts and suspicious activity, written where they happen."""

    class EventType(models.TextChoices):
        LOGIN_FAILED = "login_failed"
        ACCOUNT_LOCKED = "account_locked"
        LOCKED_LOGIN_ATTEMPT = "locked_login_attempt"
        MFA_FAILED = "mfa_failed"
        PASSWORD_RESET_REQUESTED = "password_reset_requested"
        API_KEY_REJECTED = "api_key_rejected"
        SUSPICIOUS_ACTIVITY = "suspicious_activity"
        SLOW_QUERY = "slow_query"

    class Severity(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        CRITICAL = "critical"

    org = org_foreign_key("security_events", null=True)
    event_type = models.CharField(max_length=40, choices=EventType.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="security_events"
    )
    email = models.CharField(max_length=254, blank=True, default="")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    resolved = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "security_events"
        ordering = ["-created_at"]
        indexes = [org_index("security_events", "created_at"), org_index("security_events", "event_type")]

    def __str__(self):
        return f"{self.event_type} {self.email or ''}".strip()
