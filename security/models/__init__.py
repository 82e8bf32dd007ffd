from security.models.audit import AuditLog, AuditLogManager, AuditLogQuerySet  # noqa: F401
from security.models.events import SecurityEvent  # noqa: F401
from security.models.identity import LDAPConfig, OAuthConfig  # noqa: F401
from security.models.api_keys import APIKey, APIKeyManager, APIKeyQuerySet  # noqa: F401
