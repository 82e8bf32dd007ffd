from security.models.api_keys import APIKey, APIKeyManager, APIKeyQuerySet  # noqa: F401
from security.models.audit import (  # noqa: F401
    AuditChainHead,
    AuditLog,
    AuditLogImmutableError,
    AuditLogManager,
    AuditLogQuerySet,
)
from security.models.events import SecurityEvent  # noqa: F401
from security.models.identity import LDAPConfig, OAuthConfig  # noqa: F401
