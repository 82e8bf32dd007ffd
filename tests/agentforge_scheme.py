"""AgentForge's rules, written again for the tests from its model classes and the format reference.

``agentforge_verify`` is its password check (docs/legacy-format.md §8), deliberately independent of ``legacy.passwords``:
a hash the exporter writes must verify here, exactly as AgentForge's
``PasswordService.verify_password`` would verify it after a rollback. ``NULLABLE`` lists the
fields its Pydantic models declare ``Optional[...]`` or default to ``None`` (both eras): the only
ones its loaders accept as ``null``.
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


NULLABLE = {
    "security/organizations.json": ["domain", "logo_url", "google_client_id", "google_client_secret",
                                    "microsoft_client_id", "microsoft_client_secret", "microsoft_tenant_id",
                                    "ldap_config_id", "hr_api_config"],
    "security/users.json": ["password_hash", "external_id", "department_id", "manager_id", "employee_id", "created_by",
                            "last_login", "last_active", "last_login_ip", "locked_until", "password_changed_at",
                            "verification_token", "verification_token_expires", "reset_password_token",
                            "reset_password_expires",
                            "profile.display_name", "profile.avatar_url", "profile.phone", "profile.job_title",
                            "profile.location", "profile.bio",
                            "mfa.totp_secret", "mfa.phone_number", "mfa.email_code", "mfa.email_code_expires",
                            "mfa.sms_code", "mfa.sms_code_expires", "mfa.backup_codes_generated_at", "mfa.last_used",
                            "mfa.recovery_email"],
    "security/departments.json": ["description", "parent_id", "manager_id"],
    "security/groups.json": ["description"],
    "security/roles.json": ["description", "parent_id", "created_by"],
    "security/policies.json": ["description", "created_by"],
    "security/tool_permissions.json": ["tool_name", "rate_limit_per_hour", "rate_limit_per_day", "allowed_hours_start",
                                       "allowed_hours_end", "data_scope", "created_by"],
    "security/kb_permissions.json": ["kb_name", "created_by"],
    "security/db_permissions.json": ["tool_name", "created_by"],
    "security/ldap_configs.json": ["user_search_base", "group_search_base", "last_connection_test", "last_sync",
                                   "last_sync_status", "last_error"],
    "security/oauth_configs.json": ["tenant_id"],
    "security/invitations.json": ["department_id", "message", "email_sent_at", "accepted_at"],
    "security/audit_logs.json": ["resource_id", "resource_name", "changes", "ip_address", "user_agent", "session_id",
                                 "request_id", "request_method", "request_path", "error_message"],
    "agents.json": ["owner_id", "created_by", "process_definition", "process_settings"],
    "tools.json": ["api_config", "kb_config"],
    "conversations.json": ["user_id", "access_cache"],
}
# security/settings.json: one SecuritySettings per organization under "settings".
SETTINGS_NULLABLE = ["updated_by"]

# AuditLog (both eras): these fields are required strings, and action / resource_type are enums.
AUDIT_REQUIRED_STRINGS = ("id", "org_id", "user_id", "user_email", "user_name", "timestamp")
AUDIT_ACTIONS = {"login", "logout", "login_failed", "password_change", "password_reset", "mfa_enabled", "mfa_disabled",
                 "create", "read", "update", "delete", "execute", "export", "import", "share", "publish", "invite",
                 "settings_change"}
RESOURCE_TYPES = {"user", "role", "policy", "agent", "tool", "knowledge_base", "database", "document", "conversation",
                  "settings", "organization", "department", "group", "invitation", "session"}


def audit_entry_problems(entry: dict) -> list[str]:
    """Why AgentForge's AuditLog model would refuse ``entry`` (its loader then skips it)."""
    problems = [f"{name}: {entry.get(name)!r}" for name in AUDIT_REQUIRED_STRINGS if not isinstance(entry.get(name), str)]
    if entry.get("action") not in AUDIT_ACTIONS:
        problems.append(f"action: {entry.get('action')!r}")
    if entry.get("resource_type") not in RESOURCE_TYPES:
        problems.append(f"resource_type: {entry.get('resource_type')!r}")
    return problems
