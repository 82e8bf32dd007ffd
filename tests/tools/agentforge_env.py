"""What the scripts of this folder share: how AgentForge is pointed at a data directory, and its files.

Imported by the scripts beside it (run from any directory: Python puts a script's folder on the path).
"""

import os
import sys

# The late era's database layer must never reach a server of this machine: an address that refuses
# connections makes it fall back to its JSON files, which is what these scripts read and write.
UNREACHABLE_DB = "postgresql://agentforge:unused@127.0.0.1:9/agentforge?sslmode=disable"

# data file -> (AgentForge module, Pydantic model); the container that loads a file is named after it
# (security_state.users, app_state.agents...). "#settings" is the per-organization map inside the file.
FILES = {
    "security/organizations.json": ("core.security", "Organization"),
    "security/users.json": ("core.security", "User"),
    "security/departments.json": ("core.security", "Department"),
    "security/groups.json": ("core.security", "UserGroup"),
    "security/roles.json": ("core.security", "Role"),
    "security/policies.json": ("core.security", "Policy"),
    "security/tool_permissions.json": ("core.security", "ToolPermission"),
    "security/kb_permissions.json": ("core.security", "KnowledgeBasePermission"),
    "security/db_permissions.json": ("core.security", "DatabasePermission"),
    "security/ldap_configs.json": ("core.security", "LDAPConfig"),
    "security/oauth_configs.json": ("core.security", "OAuthConfig"),
    "security/invitations.json": ("core.security", "Invitation"),
    "security/audit_logs.json": ("core.security", "AuditLog"),
    "security/settings.json#settings": ("core.security", "SecuritySettings"),
    "agents.json": ("api.main", "AgentData"),
    "tools.json": ("api.main", "ToolConfiguration"),
    "documents.json": ("api.main", "Document"),
    "scraped_pages.json": ("api.main", "ScrapedPage"),
    "conversations.json": ("api.main", "Conversation"),
    "settings.json": ("api.main", "SystemSettings"),
}


def point_agentforge_at(checkout, data_dir, **extra):
    """Environment and import path for importing ``checkout``'s app against ``data_dir``."""
    os.environ.update(
        {
            "DATA_PATH": data_dir,
            "UPLOAD_PATH": os.path.join(data_dir, "uploads"),
            "DATABASE_URL": UNREACHABLE_DB,
            "DB_SSL_MODE": "disable",
            "DB_POOL_TIMEOUT": "2",
            "JWT_SECRET_KEY": "agentforge-tools",
            **extra,
        }
    )
    sys.path.insert(0, os.path.abspath(checkout))
