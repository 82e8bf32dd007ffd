"""A generated legacy data directory with every pitfall of docs/legacy-format.md §10.

``write_corpus(root)`` writes it with the legacy formatting and returns a dict of facts
the tests assert on (plaintext passwords, ids, secrets). Hashes are real PBKDF2 values
computed like AgentForge's PasswordService (docs/legacy-format.md §8), so old passwords must verify.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

NOW = "2026-01-20T10:00:00.123456"
PAST = "2026-01-05T09:05:05"  # no fraction: microsecond 0
FUTURE = "2099-01-01T00:00:00.000001"

U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"
U3 = "33333333-3333-4333-8333-333333333333"
U4 = "44444444-4444-4444-8444-444444444444"
T_API = "aaaaaaaa-0000-4000-8000-000000000001"
T_KB = "demo-kb-1a2b3c4d"
T_KIT = "kit_1a2b3c4d_api_1"
T_EMAIL = "aaaaaaaa-0000-4000-8000-000000000002"
T_OLD = "aaaaaaaa-0000-4000-8000-000000000003"
A1 = "bbbbbbbb-0000-4000-8000-000000000001"
A2 = "bbbbbbbb-0000-4000-8000-000000000002"
D1 = "cccccccc-0000-4000-8000-000000000001"
P1 = "cccccccc-0000-4000-8000-000000000002"
C1 = "dddddddd-0000-4000-8000-000000000001"
C2 = "dddddddd-0000-4000-8000-000000000002"
C3 = "dddddddd-0000-4000-8000-000000000003"
C_MISKEYED = "dddddddd-0000-4000-8000-000000000004"


def legacy_hash(password: str, two_part=False, iterations=100_000, salt=None) -> str:
    salt = salt or secrets.token_hex(32)
    key = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("utf-8"), iterations).hex()
    return f"{salt}${key}" if two_part else f"{salt}${iterations}${key}"


def _mfa(**over):
    base = {
        "enabled": False,
        "methods": [],
        "totp_secret": None,
        "totp_verified": False,
        "backup_codes": [],
        "backup_codes_generated_at": None,
        "phone_number": None,
        "phone_verified": False,
        "email_code": None,
        "email_code_expires": None,
        "sms_code": None,
        "sms_code_expires": None,
        "last_used": None,
        "recovery_email": None,
    }
    base.update(over)
    return base


def _profile(first, last, **over):
    base = {
        "first_name": first,
        "last_name": last,
        "display_name": None,
        "avatar_url": None,
        "phone": None,
        "timezone": "UTC",
        "language": "en",
        "job_title": None,
        "location": None,
        "bio": None,
        "custom_attributes": {},
    }
    base.update(over)
    return base


def _user(uid, email, password_hash, **over):
    base = {
        "id": uid,
        "org_id": "org_default",
        "email": email,
        "password_hash": password_hash,
        "auth_provider": "local",
        "external_id": None,
        "profile": _profile("First", "Last"),
        "mfa": _mfa(),
        "department_id": None,
        "group_ids": [],
        "role_ids": ["role_user"],
        "direct_permissions": [],
        "status": "active",
        "email_verified": True,
        "verification_token": None,
        "verification_token_expires": None,
        "reset_password_token": None,
        "reset_password_expires": None,
        "password_history": [],
        "failed_login_attempts": 0,
        "locked_until": None,
        "password_changed_at": None,
        "must_change_password": False,
        "last_login": None,
        "last_active": None,
        "last_login_ip": None,
        "created_at": PAST,
        "updated_at": NOW,
        "created_by": None,
        "has_admin_access": False,
        "has_enduser_access": True,
        "manager_id": None,
        "employee_id": None,
    }
    base.update(over)
    return base


def build_corpus() -> tuple[dict, dict]:
    """Return (files: {relative path: data}, facts)."""
    facts = {
        "passwords": {U1: "old-Pass-1", U2: "pässwörd-ü 🔑", U4: "other-org-pw"},
        "history_plain": "previous-pw-9",
        "backup_code": "A1B2C3D4",
    }
    orgs = {
        "org_default": {
            "id": "org_default",
            "name": "Default Organization",
            "slug": "default",
            "domain": None,
            "logo_url": None,
            "settings": {},
            "allowed_auth_providers": ["local", "google"],
            "require_mfa": False,
            "allowed_email_domains": [],
            "google_client_id": None,
            "google_client_secret": None,
            "microsoft_client_id": None,
            "microsoft_client_secret": None,
            "microsoft_tenant_id": None,
            "ldap_config_id": None,
            "max_users": 100,
            "max_agents": 50,
            "max_tools": 100,
            "status": "active",
            "created_at": PAST,
            "updated_at": NOW,
        },
        "org_abc123def456": {
            "id": "org_abc123def456",
            "name": "Ünïcode Org",
            "slug": "unicode-org",
            "domain": "uni.example",
            "logo_url": None,
            "settings": {"theme": "dark"},
            "allowed_auth_providers": ["local", "microsoft"],
            "require_mfa": True,
            "allowed_email_domains": ["uni.example"],
            "google_client_id": "gid.apps",
            "google_client_secret": "g-secret-123",
            "microsoft_client_id": "ms-id",
            "microsoft_client_secret": "ms-secret-456",
            "microsoft_tenant_id": "tenant",
            "ldap_config_id": "ldap_aaaaaaaaaaaa",
            "max_users": 10,
            "max_agents": 5,
            "max_tools": 7,
            "status": "suspended",
            "created_at": NOW,
            "updated_at": NOW,
            "directory_source": "ldap",
            "hr_api_config": {"url": "https://hr"},
        },
    }
    ldap = {
        "ldap_aaaaaaaaaaaa": {
            "id": "ldap_aaaaaaaaaaaa",
            "org_id": "org_abc123def456",
            "name": "Corp LDAP",
            "server_url": "ldaps://ldap.uni",
            "use_ssl": True,
            "use_tls": False,
            "verify_ssl": True,
            "connection_timeout": 10,
            "bind_dn": "cn=admin",
            "bind_password": "ldap-bind-pw",
            "base_dn": "dc=uni",
            "user_search_filter": "(uid={username})",
            "user_search_base": None,
            "user_object_class": "person",
            "group_search_filter": None,
            "group_search_base": None,
            "group_object_class": "group",
            "attribute_mapping": {"email": "mail"},
            "group_role_mapping": {"cn=admins": "role_admin"},
            "default_role_id": "role_user",
            "sync_enabled": False,
            "sync_interval_hours": 24,
            "sync_delete_removed": False,
            "sync_update_existing": True,
            "last_sync": None,
            "last_sync_status": None,
            "last_sync_users_synced": 0,
            "is_active": True,
            "connection_status": "unknown",
            "last_connection_test": None,
            "last_error": None,
            "created_at": NOW,
            "updated_at": NOW,
        }
    }
    oauth = {
        "oauth_bbbbbbbbbbbb": {
            "id": "oauth_bbbbbbbbbbbb",
            "org_id": "org_abc123def456",
            "provider": "microsoft",
            "client_id": "cid",
            "client_secret": "oauth-secret-789",
            "tenant_id": "t1",
            "scopes": ["openid"],
            "enabled": True,
            "auto_create_users": True,
            "update_profile_on_login": True,
            "default_role_id": "role_user",
            "allowed_domains": [],
            "created_at": NOW,
            "updated_at": NOW,
        }
    }

    def role(rid, name, level, perms, parent=None, system=True, org="org_default"):
        return {
            "id": rid,
            "org_id": org,
            "name": name,
            "description": None,
            "permissions": perms,
            "parent_id": parent,
            "level": level,
            "is_system": system,
            "created_at": PAST,
            "updated_at": PAST,
            "created_by": None,
        }

    roles = {
        "role_super_admin": role("role_super_admin", "Super Admin", 0, ["system:admin", "users:create", "kb:upload"]),
        "role_admin": role("role_admin", "Admin", 1, ["users:view", "agents:test", "org:manage"]),
        "role_manager": role("role_manager", "Manager", 2, ["agents:view"]),
        "role_user": role("role_user", "User", 3, ["chat:use", "agents:view"]),
        "role_viewer": role("role_viewer", "Viewer", 4, ["agents:view"]),
        # unsorted, duplicated, a vocabulary of 2026-02-11, parent inheritance, created by a user
        "role_0123456789ab": {
            **role(
                "role_0123456789ab",
                "Process Runner",
                50,
                ["process:execute", "demo:access", "process:execute", "audit:view"],
                parent="role_user",
                system=False,
            ),
            "created_by": U1,
        },
    }
    departments = {
        "dept_aaaaaaaaaaaa": {
            "id": "dept_aaaaaaaaaaaa",
            "org_id": "org_default",
            "name": "Engineering",
            "description": None,
            "parent_id": None,
            "manager_id": U1,
            "created_at": PAST,
            "updated_at": PAST,
        },
        "dept_bbbbbbbbbbbb": {
            "id": "dept_bbbbbbbbbbbb",
            "org_id": "org_default",
            "name": "Platform",
            "description": "sub",
            "parent_id": "dept_aaaaaaaaaaaa",
            "manager_id": "99999999-9999-4999-8999-999999999999",
            "created_at": PAST,
            "updated_at": PAST,
        },
    }
    groups = {
        # grp_ era, no member_ids; U2 is a member only through users[].group_ids
        "grp_aaaaaaaaaaaa": {
            "id": "grp_aaaaaaaaaaaa",
            "org_id": "org_default",
            "name": "Old group",
            "description": None,
            "user_ids": [U1],
            "role_ids": ["role_manager", "role_gone"],
            "created_at": PAST,
            "updated_at": PAST,
        },
        # uuid era with member_ids disagreeing with user_ids
        "eeeeeeee-0000-4000-8000-000000000001": {
            "id": "eeeeeeee-0000-4000-8000-000000000001",
            "org_id": "org_default",
            "name": "New group",
            "description": "x",
            "user_ids": [U1],
            "member_ids": [U3],
            "role_ids": [],
            "created_at": NOW,
            "updated_at": NOW,
        },
    }
    history_hash = legacy_hash(facts["history_plain"], two_part=True)
    users = {
        U1: _user(
            U1,
            "Admin@Example.com",
            legacy_hash(facts["passwords"][U1], two_part=True),
            role_ids=["role_super_admin"],
            group_ids=[],
            department_id="dept_aaaaaaaaaaaa",
            verification_token="stale-token-verified-user",
            password_history=[history_hash, legacy_hash("x2")],
            mfa=_mfa(
                totp_secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
                email_code="283299",
                email_code_expires=PAST,
                backup_codes=[legacy_hash(facts["backup_code"]), legacy_hash("FFFF0000")],
            ),
            profile=_profile(
                "Ädmin",
                "Üser",
                avatar_url="https://lh3.googleusercontent.com/" + "a" * 1092,
                custom_attributes={"team": "core"},
                pronouns="they",
            ),
        ),
        U2: _user(
            U2,
            "pending@example.com",
            legacy_hash(facts["passwords"][U2]),
            status="pending",
            email_verified=False,
            verification_token="valid-verification-token",
            reset_password_token="valid-reset-token",
            reset_password_expires=FUTURE,
            role_ids=["role_user", "role_deleted", "role_0123456789ab"],
            group_ids=["grp_aaaaaaaaaaaa", "grp_missing00000"],
            manager_id=U1,
            created_by=U1,
            direct_permissions=["legacy:thing"],
            failed_login_attempts=2,
            last_login_ip="not-an-ip",
        ),
        # OAuth only, older era: no has_*_access / manager_id / employee_id keys
        U3: {
            k: v
            for k, v in _user(
                U3, "google.user@gmail.com", None, auth_provider="google", external_id="104857600000000000001"
            ).items()
            if k not in ("has_admin_access", "has_enduser_access", "manager_id", "employee_id")
        },
        U4: _user(
            U4,
            "admin@example.com",
            legacy_hash(facts["passwords"][U4]),
            org_id="org_abc123def456",
            role_ids=[],
            mfa=_mfa(enabled=True, methods=["totp"], totp_secret="KRSXG5CTMVRXEZLU", totp_verified=True),
            has_admin_access=True,
            employee_id="E-1",
            unknown_future_field={"x": 1},
        ),
    }
    sec_settings = {"tenancy_mode": "multi", "settings": {}}
    for org in ("org_default", "org_abc123def456"):
        sec_settings["settings"][org] = {
            "id": "security_settings",
            "org_id": org,
            "registration_mode": "invite_only",
            "email_verification_required": True,
            "allowed_email_domains": [],
            "password_min_length": 12,
            "password_history_count": 5,
            "mfa_enforcement": "optional",
            "mfa_allowed_methods": ["totp", "email"],
            "cors_allowed_origins": ["*"],
            "session_timeout_minutes": 480,
            "created_at": PAST,
            "updated_at": NOW,
            "updated_by": None,
        }
    audit = []
    for i in range(6):
        audit.append(
            {
                "id": f"ffffffff-0000-4000-8000-00000000000{i}",
                "org_id": "org_default",
                "user_id": U1 if i != 4 else "00000000-dead-4000-8000-000000000000",
                "user_email": "admin@example.com",
                "user_name": "Ädmin Üser",
                "session_id": None if i % 2 else f"sess-{i}",
                "action": ["login", "logout", "login_failed", "create", "update", "settings_change"][i],
                "resource_type": "user",
                "resource_id": U2 if i == 3 else None,
                "resource_name": None,
                "details": {"remember_me": True}
                if i == 0
                else {"reason": "invalid_password", "attempts": 2}
                if i == 2
                else {},
                "changes": {"status": {"old": "pending", "new": "active"}} if i == 4 else None,
                "ip_address": None if i == 1 else "127.0.0.1" if i else "172.66.0.243",
                "user_agent": "Mozilla/5.0",
                "request_id": None,
                "request_path": None,
                "request_method": None,
                "success": i != 2,
                "error_message": "bad password" if i == 2 else None,
                "timestamp": f"2026-01-0{i + 1}T10:00:00.00000{i + 1}",
            }
        )
    audit[5]["timestamp"] = "2026-01-06T10:00:00"
    tool_perms = {
        "tp_aaaaaaaaaaaa": {
            "id": "tp_aaaaaaaaaaaa",
            "org_id": "org_default",
            "tool_id": "gone-tool-id",
            "tool_name": "Gone",
            "role_ids": ["role_user"],
            "user_ids": [],
            "group_ids": [],
            "can_view": True,
            "can_execute": True,
            "can_edit": False,
            "can_delete": False,
            "allowed_actions": [],
            "denied_actions": [],
            "rate_limit_per_hour": 10,
            "rate_limit_per_day": None,
            "allowed_hours_start": 8,
            "allowed_hours_end": 18,
            "allowed_days": [0, 1, 2, 3, 4],
            "allowed_ips": [],
            "denied_ips": [],
            "data_scope": None,
            "created_at": NOW,
            "updated_at": NOW,
            "created_by": U1,
        },
        "tp_bbbbbbbbbbbb": {
            "id": "tp_bbbbbbbbbbbb",
            "org_id": "org_default",
            "tool_id": T_API,
            "tool_name": "API",
            "created_at": NOW,
            "updated_at": NOW,
        },
    }
    policies = {
        "pol_aaaaaaaaaaaa": {
            "id": "pol_aaaaaaaaaaaa",
            "org_id": "org_default",
            "name": "Deny nights",
            "resource_type": "agent",
            "resource_ids": [],
            "actions": ["execute"],
            "rules": [{"conditions": [{"attribute": "time.hour", "operator": "gt", "value": 22}], "logic": "AND"}],
            "effect": "deny",
            "priority": 10,
            "is_active": True,
            "created_at": NOW,
            "updated_at": NOW,
            "created_by": U1,
        }
    }
    invitations = {
        "abababab-0000-4000-8000-000000000001": {
            "id": "abababab-0000-4000-8000-000000000001",
            "org_id": "org_default",
            "email": "new@example.com",
            "token": "0123456789abcdef0123456789abcdef",
            "role_ids": ["role_user"],
            "department_id": None,
            "group_ids": [],
            "invited_by": U1,
            "message": None,
            "created_at": NOW,
            "expires_at": FUTURE,
            "accepted_at": None,
            "email_sent": True,
            "email_sent_at": NOW,
            "resend_count": 0,
        }
    }
    kb_perms = {
        "kbp_aaaaaaaaaaaa": {
            "id": "kbp_aaaaaaaaaaaa",
            "org_id": "org_default",
            "kb_id": T_KB,
            "kb_name": "KB",
            "role_ids": [],
            "max_classification": "internal",
            "created_at": NOW,
        }
    }
    db_perms = {
        "dbp_aaaaaaaaaaaa": {
            "id": "dbp_aaaaaaaaaaaa",
            "org_id": "org_default",
            "tool_id": T_API,
            "row_filters": {"orders": "owner = '${user.id}'"},
            "allowed_operations": ["SELECT"],
        }
    }

    tools = {
        T_API: {
            "id": T_API,
            "type": "api",
            "name": "Weather API",
            "description": "d",
            "config": {},
            "api_config": {
                "base_url": "https://api.weather",
                "http_method": "GET",
                "endpoint_path": "/now",
                "auth_type": "bearer",
                "auth_value": "sk-api-secret",
                "api_key_name": "X-API-Key",
                "api_key_location": "header",
                "headers": {"Authorization": "Bearer hdr-secret", "Accept": "json"},
                "input_parameters": [
                    {
                        "id": "p1",
                        "name": "city",
                        "description": "",
                        "data_type": "string",
                        "required": True,
                        "location": "query",
                    }
                ],
            },
            "kb_config": None,
            "documents": [],
            "scraped_pages": [],
            "created_at": NOW,
            "is_active": True,
            "owner_id": U1,
            "access_type": "specific_users",
            "allowed_user_ids": [U2],
            "allowed_group_ids": [],
            "can_edit_user_ids": [],
            "can_delete_user_ids": [],
            "can_execute_user_ids": [U2],
        },
        T_KB: {
            "id": T_KB,
            "type": "knowledge",
            "name": "Demo KB",
            "description": "",
            "config": {"collection_id": "kb_x", "sections": [{"title": "t", "content": "c"}]},
            "api_config": None,
            "kb_config": {
                "collection_id": "kb_x",
                "embedding": {
                    "use_global": False,
                    "provider": "openai",
                    "model": "m",
                    "local_model": None,
                    "api_key": "emb-secret",
                },
                "vector_db": {"use_global": True, "provider": "pinecone", "pinecone_api_key": "pc-secret"},
                "chunk_size": 1000,
                "chunk_overlap": 200,
                "top_k": 5,
                "search_type": "hybrid",
                "similarity_threshold": 0.7,
            },
            "documents": [],
            "scraped_pages": [],
            "created_at": NOW,
            "is_active": True,
            "owner_id": "system",
            "access_type": "public",
            "allowed_user_ids": [],
            "allowed_group_ids": [],
            "can_edit_user_ids": [],
            "can_delete_user_ids": [],
            "can_execute_user_ids": [],
        },
        T_KIT: {
            "id": T_KIT,
            "type": "api",
            "name": "Kit API",
            "description": "",
            "config": {"mock_response": {"ok": True}},
            "api_config": None,
            "kb_config": None,
            "documents": [],
            "scraped_pages": [],
            "created_at": PAST,
            "is_active": True,
            "owner_id": "ffffffff-aaaa-4000-8000-000000000000",
            "access_type": "authenticated",
            "allowed_user_ids": [],
            "allowed_group_ids": [],
            "can_edit_user_ids": [],
            "can_delete_user_ids": [],
            "can_execute_user_ids": [],
        },
        T_EMAIL: {
            "id": T_EMAIL,
            "type": "email",
            "name": "Mailer",
            "description": "",
            "config": {
                "provider": "smtp",
                "smtp_host": "smtp.x",
                "smtp_port": 587,
                "smtp_user": "me",
                "smtp_pass": "smtp-secret",
                "apiKey": "",
            },
            "api_config": None,
            "kb_config": None,
            "documents": [],
            "scraped_pages": [],
            "created_at": NOW,
            "is_active": False,
            "owner_id": U2,
            "access_type": "owner_only",
            "allowed_user_ids": [],
            "allowed_group_ids": [],
            "can_edit_user_ids": [],
            "can_delete_user_ids": [],
            "can_execute_user_ids": [],
        },
        # older than 2026-01-18: no owner / access fields; websearch
        T_OLD: {
            "id": T_OLD,
            "type": "websearch",
            "name": "Search",
            "description": "",
            "config": {"provider": "tavily", "api_key": "tvly-secret"},
            "api_config": None,
            "kb_config": None,
            "documents": [],
            "scraped_pages": [],
            "created_at": PAST,
            "is_active": True,
        },
    }
    agents = {
        A1: {
            "id": A1,
            "name": "Helper",
            "icon": "\U0001f916",
            "goal": "Help",
            "agent_type": "conversational",
            "personality": {
                "tone": "professional",
                "voice": "balanced",
                "languages": ["English"],
                "traits": [],
                "creativity": 5,
                "length": 5,
                "formality": 7,
                "empathy": 6,
                "proactivity": 5,
                "confidence": 7,
            },
            "guardrails": {"anti_hallucination": True, "avoid_topics": [], "max_length": "medium", "language": "user"},
            "tasks": [
                {
                    "id": "t1",
                    "name": "Answer",
                    "description": "",
                    "instructions": ["bare string", {"id": "i1", "text": "x"}],
                }
            ],
            "tool_ids": [f"api:{T_API}", f"kb:{T_KB}", "gone-tool-id", T_EMAIL],
            "model_id": "gpt-4o",
            "created_at": NOW,
            "updated_at": NOW,
            "status": "published",
            "is_active": True,
            "memory": [{"timestamp": NOW, "summary": "s", "conversation_id": C1}],
            "memory_enabled": True,
            "owner_id": U1,
            "created_by": U1,
            "process_definition": None,
            "process_settings": None,
        },
        # older agent: no owner/created_by/agent_type/process_*
        A2: {
            "id": A2,
            "name": "Old agent \u00e9",
            "icon": "\U0001f525",
            "goal": "",
            "personality": {},
            "guardrails": {},
            "tasks": [],
            "tool_ids": [],
            "model_id": "gpt-4o",
            "created_at": PAST,
            "updated_at": PAST,
            "status": "draft",
            "is_active": True,
            "memory": [],
            "memory_enabled": False,
        },
    }
    documents = {
        D1: {
            "id": D1,
            "tool_id": T_KB,
            "filename": "1a2b3c4d_report.pdf",
            "original_name": "report.pdf",
            "file_type": "pdf",
            "file_size": 12345,
            "content": "Chunk zero. Chunk one. Chunk two.",
            "chunks": [
                {"id": 0, "text": "Chunk zero.", "start": 0, "end": 11},
                {"id": 1, "text": "Chunk one (embedded copy).", "start": 12, "end": 22},
                {"id": 2, "text": "Chunk two.", "start": 23, "end": 33},
            ],
            "status": "ready",
            "error_message": "",
            "created_at": NOW,
        }
    }
    pages = {
        P1: {
            "id": P1,
            "tool_id": T_KB,
            "url": "https://example.com/a",
            "title": "Page A",
            "content": "Web text",
            "chunks": [{"id": 0, "text": "Web text", "start": 0, "end": 8}],
            "status": "ready",
            "error_message": "",
            "created_at": NOW,
        }
    }
    chunks = [
        {
            "tool_id": T_KB,
            "doc_id": D1,
            "chunk_id": 0,
            "text": "Chunk zero.",
            "source": "report.pdf",
            "type": "document",
        },
        {
            "tool_id": T_KB,
            "doc_id": D1,
            "chunk_id": 1,
            "text": "Chunk one.",
            "source": "1a2b3c4d_report.pdf",
            "type": "document",
        },
        {"tool_id": T_KB, "page_id": P1, "chunk_id": 0, "text": "Web text", "source": "Page A", "type": "website"},
        {"chunk_id": "chunk-1a2b3c4d", "text": "Inline demo", "source": "demo", "type": "faq", "tool_id": T_KB},
        {
            "chunk_id": "table-1a2b3c4d",
            "text": "a | b",
            "source": "sheet",
            "type": "table",
            "tool_id": T_KB,
            "table_data": {"headers": ["a", "b"], "rows": [[1, 2]]},
            "is_table": True,
            "rows_count": 1,
        },
        {
            "tool_id": T_KB,
            "doc_id": "cccccccc-dead-4000-8000-000000000000",
            "chunk_id": 5,
            "text": "orphan",
            "source": "gone.pdf",
            "type": "document",
        },
    ]

    def message(mid, role, content, ts, **over):
        base = {"id": mid, "role": role, "content": content, "timestamp": ts, "tool_calls": [], "sources": []}
        base.update(over)
        return base

    conversations = {
        C1: {
            "id": C1,
            "agent_id": A1,
            "user_id": U2,
            "title": "Chat with Helper",
            "messages": [
                message("m0000000-0000-4000-8000-000000000001", "user", "Hi \U0001f600\n\n[Attached: a.pdf]", NOW),
                message(
                    "m0000000-0000-4000-8000-000000000002",
                    "assistant",
                    "Hello",
                    NOW,
                    sources=[{"source": "report.pdf", "type": "document", "relevance": 87}],
                ),
            ],
            "created_at": NOW,
            "updated_at": NOW,
            "access_cache": {
                "user_id": U2,
                "user_name": "P",
                "user_role": "user",
                "user_groups": [],
                "accessible_task_names": [],
                "denied_task_names": [],
                "accessible_tool_ids": [],
                "denied_tool_ids": [],
                "loaded_at": NOW,
            },
        },
        C2: {
            "id": C2,
            "agent_id": "bbbbbbbb-dead-4000-8000-000000000000",
            "user_id": U1,
            "title": "Orphan",
            "messages": [message("m0000000-0000-4000-8000-000000000003", "user", "anyone?", PAST)],
            "created_at": PAST,
            "updated_at": PAST,
            "access_cache": None,
        },
        # old era: no user_id / access_cache; test chat
        C3: {
            "id": C3,
            "agent_id": A2,
            "title": "[TEST] sandbox",
            "messages": [],
            "created_at": PAST,
            "updated_at": PAST,
        },
    }
    conversations["outer-key-differs"] = {
        "id": C_MISKEYED,
        "agent_id": A1,
        "user_id": None,
        "title": "Miskeyed",
        "messages": [],
        "created_at": NOW,
        "updated_at": NOW,
        "access_cache": None,
    }
    settings = {
        "llm": {
            "provider": "openai",
            "model": "gpt-4o",
            "api_key": "sk-llm-secret",
            "api_base": "",
            "api_version": "",
            "temperature": 0.7,
            "max_tokens": 4096,
            "ollama_host": "http://localhost:11434",
            "azure_deployment": "",
            "aws_region": "us-east-1",
            "aws_access_key": "AKIA123",
            "aws_secret_key": "aws-secret",
        },
        "llm_providers": [
            {
                "provider": "anthropic",
                "name": "Claude",
                "api_key": "sk-ant-secret",
                "api_base": "",
                "resource": "",
                "models": ["claude-3"],
            }
        ],
        "google": {"gemini_key": "gem-secret", "cloud_key": ""},
        "embedding": {"provider": "openai", "model": "text-embedding-3-small", "api_key": "", "dimensions": 1536},
        "vector_db": {"provider": "memory", "pinecone_api_key": "", "qdrant_port": 6333},
        "chunk_size": 1000,
        "chunk_overlap": 200,
        "search_top_k": 5,
        "enable_rag": True,
        "enable_web_scraping": True,
        "enable_api_tools": True,
        "app_name": "AgentForge",
        "app_logo": "\U0001f525",
        "theme": "dark",
    }
    integrations = {
        "google": {"client_id": "sys-gid", "client_secret": "sys-g-secret"},
        "microsoft": {"client_id": "sys-mid", "client_secret": "sys-m-secret"},
    }
    files = {
        "security/organizations.json": orgs,
        "security/users.json": users,
        "security/departments.json": departments,
        "security/groups.json": groups,
        "security/roles.json": roles,
        "security/policies.json": policies,
        "security/tool_permissions.json": tool_perms,
        "security/kb_permissions.json": kb_perms,
        "security/db_permissions.json": db_perms,
        "security/ldap_configs.json": ldap,
        "security/oauth_configs.json": oauth,
        "security/invitations.json": invitations,
        "security/settings.json": sec_settings,
        "security/audit_logs.json": audit,
        "agents.json": agents,
        "tools.json": tools,
        "documents.json": documents,
        "scraped_pages.json": pages,
        "conversations.json": conversations,
        "chunks_index.json": chunks,
        "settings.json": settings,
        "integrations.json": integrations,
        "lab/99999999-0000-4000-8000-00000000000a.json": {
            "id": "99999999-0000-4000-8000-00000000000a",
            "name": "Mock",
            "slug": "mock",
            "endpoint": "/lab/mock",
            "data": [{"a": 1}],
            "schema": {},
            "record_count": 1,
            "created_at": NOW,
            "org_id": "org_default",
        },
        "lab/99999999-0000-4000-8000-00000000000b_meta.json": {
            "id": "b",
            "name": "doc",
            "format": "pdf",
            "size": 10,
            "download_url": "/x",
            "created_at": NOW,
            "org_id": "org_default",
        },
    }
    facts.update(users=users, tools=tools, files=files)
    return files, facts


def dump(path: Path, data, relative: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    security = relative.startswith("security/") or relative.startswith("lab/")
    if relative == "chunks_index.json":
        text = json.dumps(data, ensure_ascii=True)
    else:
        text = json.dumps(data, ensure_ascii=not security, indent=2)
    path.write_text(text, encoding="utf-8")


def write_corpus(root) -> dict:
    root = Path(root)
    files, facts = build_corpus()
    for relative, data in files.items():
        dump(root / relative, data, relative)
    (root / "lab" / "99999999-0000-4000-8000-00000000000b.png").write_bytes(b"\x89PNG fake")
    (root / "uploads").mkdir(exist_ok=True)
    (root / "uploads" / "1a2b3c4d_report.pdf").write_bytes(b"%PDF fake")
    return facts
