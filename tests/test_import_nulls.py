"""``null`` wherever AgentForge's Pydantic models allow it: imported, and written back as null.

AgentForge's writer (``.dict()``) emits ``null`` for every ``Optional[...]`` field and every
field defaulting to ``None``; ``NULLABLE`` is that list, read from its model classes at
both commits that wrote JSON (docs/import.md, "Fields that may be null").
"""

from __future__ import annotations

import pytest

from agents.models import ToolPermission
from tests import legacy_corpus as C
from tests.legacy_helpers import load_dir, run_export, run_import

pytestmark = pytest.mark.django_db

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


def _set(record: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        record = record.setdefault(name, {})
    record[leaf] = value


def _get(record: dict, dotted: str):
    for name in dotted.split("."):
        record = record[name]
    return record


def _records(data):
    return data if isinstance(data, list) else list(data.values())


def _null_corpus(root):
    """The generated corpus with every Optional field of every record set to null."""
    files, facts = C.build_corpus()
    for relative, fields in NULLABLE.items():
        for record in _records(files[relative]):
            for dotted in fields:
                _set(record, dotted, None)
    for settings in files["security/settings.json"]["settings"].values():
        for name in SETTINGS_NULLABLE:
            settings[name] = None
    for relative, data in files.items():
        C.dump(root / relative, data, relative)
    return files


def test_every_optional_field_null_at_once_imports_and_exports_as_null(tmp_path):
    files = _null_corpus(tmp_path / "in")
    run_import(tmp_path / "in", verbosity=0)
    # the case seen on every real installation that created a tool permission
    assert ToolPermission.all_orgs.get(legacy_id="tp_aaaaaaaaaaaa").tool_name is None

    run_export(tmp_path / "out")
    exported = load_dir(tmp_path / "out")
    checked = 0
    for relative, fields in NULLABLE.items():
        out = exported[relative]
        by_id = {r["id"]: r for r in _records(out)}
        for record in _records(files[relative]):
            for dotted in fields:
                assert _get(by_id[record["id"]], dotted) is None, f"{relative}: record {record['id']}: {dotted}"
                checked += 1
    for org, settings in exported["security/settings.json"]["settings"].items():
        for name in SETTINGS_NULLABLE:
            assert settings[name] is None, f"security/settings.json: {org}: {name}"
            checked += 1
    assert checked == sum(len(f) * len(_records(files[r])) for r, f in NULLABLE.items()) + 2 * len(SETTINGS_NULLABLE)


def test_a_null_file_imports_twice_without_change(tmp_path):
    from tests.legacy_helpers import rerun_changes_nothing

    _null_corpus(tmp_path / "in")
    run_import(tmp_path / "in", verbosity=0)
    rerun_changes_nothing(tmp_path / "in")
