"""Shared helpers of the import/export tests: table dumps, wiping, running the commands."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from django.core.management import call_command
from django.db import connection, transaction

from accounts.models import (
    Department,
    Group,
    GroupMembership,
    GroupRole,
    MFASettings,
    Organization,
    PasswordHistory,
    Permission,
    Role,
    RolePermission,
    User,
    UserRole,
)
from agentforge_agents.models import Agent, AgentTool, Tool, ToolPermission
from agentforge_core import native
from agentforge_core.tenancy import unscoped
from conversations.models import Conversation, Message
from knowledge.models import Document, DocumentChunk
from legacy.models import LegacyRecord
from security.models import AuditLog, LDAPConfig, OAuthConfig
from settings_app.models import OrgSetting, SystemSetting, UserPreference

# A byte-for-byte copy of shared/legacy-sample, kept in the repository so a clone is self-contained.
SAMPLE = Path(__file__).resolve().parent.parent / "sample-data"

MODELS = [
    Organization,
    User,
    Department,
    Group,
    GroupMembership,
    GroupRole,
    MFASettings,
    PasswordHistory,
    Permission,
    Role,
    RolePermission,
    UserRole,
    Agent,
    AgentTool,
    Tool,
    ToolPermission,
    Conversation,
    Message,
    Document,
    DocumentChunk,
    LegacyRecord,
    AuditLog,
    LDAPConfig,
    OAuthConfig,
    OrgSetting,
    SystemSetting,
    UserPreference,
]
# Columns filled with the import time (no legacy source) and database-assigned ids.
IMPORT_TIME = {
    ("document_chunks", "created_at"),
    ("documents", "updated_at"),
    ("tools", "updated_at"),
    ("legacy_records", "imported_at"),
    ("permissions", "created_at"),
    ("user_preferences", "updated_at"),
    ("mfa_settings", "updated_at"),
    ("org_settings", "updated_at"),
    ("system_settings", "updated_at"),
    ("messages", "updated_at"),
    # valid one-time tokens/codes are stored only as SHA-256, so an export cannot carry them
    ("users", "verification_token_hash"),
    ("users", "reset_password_token_hash"),
    ("mfa_settings", "email_code_hash"),
    ("mfa_settings", "sms_code_hash"),
}


def dump(include_import_time=True) -> dict:
    """Every row of every legacy-fed table (decrypted), without auto ids, sorted."""
    out = {}
    for model in MODELS:
        table = model._meta.db_table
        fields = []
        for f in model._meta.concrete_fields:
            if f.primary_key and f.get_internal_type() in ("AutoField", "BigAutoField"):
                continue
            if not include_import_time and (table, f.attname) in IMPORT_TIME:
                continue
            fields.append(f.attname)
        if model is RolePermission:
            fields = [f for f in fields if f != "permission_id"] + ["permission__codename"]
        rows = [json.dumps(r, sort_keys=True, default=str) for r in model._base_manager.values(*fields)]
        out[table] = sorted(rows)
    return out


def run_import(path, **options) -> str:
    out = io.StringIO()
    call_command("import_json", str(path), stdout=out, verbosity=options.pop("verbosity", 1), **options)
    return out.getvalue()


def rerun_changes_nothing(path) -> str:
    """Import ``path`` again, then again with --skip-existing: the database must not change.
    Returns the first re-run's output."""
    before = dump()
    output = run_import(path)
    assert dump() == before
    run_import(path, skip_existing=True, verbosity=0)
    assert dump() == before
    return output


def run_parity(data_dir, *extra) -> tuple[int, str]:
    """verify_parity on ``data_dir``: (0, report) when clean, (1, report and error) on drift."""
    from django.core.management.base import CommandError

    out = io.StringIO()
    try:
        call_command("verify_parity", "--data-dir", str(data_dir), *extra, stdout=out, stderr=out)
        return 0, out.getvalue()
    except CommandError as exc:
        return 1, out.getvalue() + str(exc)


def run_export(path) -> None:
    call_command("export_json", str(path), stdout=io.StringIO(), verbosity=0)


def wipe() -> None:
    """Empty every table the import fills (a fresh database, within the test transaction)."""
    from security.models import AuditChainHead

    qn = connection.ops.quote_name
    # unscoped(): hand-written SQL reaches every organization's rows only as system work.
    with unscoped(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT set_config('agentforge.audit_purge', 'on', true)")
        if connection.vendor == "mysql":
            cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        for model in [*reversed(MODELS), AuditChainHead]:
            cursor.execute(f"DELETE FROM {qn(model._meta.db_table)}")
        if connection.vendor == "mysql":
            cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
        if connection.vendor == "postgresql":
            cursor.execute("SELECT set_config('agentforge.audit_purge', 'off', true)")


@contextlib.contextmanager
def rolled_back():
    """Run the block in a savepoint rolled back at its end: the database as it was before.
    What undoes an import on PostgreSQL, where wipe() cannot: the application role may not
    delete audit entries (only the owner's retention purge may)."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def load_dir(root) -> dict:
    """{relative path: parsed JSON} of a legacy directory (JSON files only)."""
    root = Path(root)
    return {str(p.relative_to(root)): json.loads(p.read_text(encoding="utf-8")) for p in sorted(root.rglob("*.json"))}


def run_store_child(tmp_path, data_dir, body: str, delay: str):
    """Run ``body`` in a real process with the dual store on the test database (``get_store``
    and ``os`` imported, ``DUAL_WRITE_DELAY=delay``): what a crash or an exit does to the files."""
    import os
    import subprocess
    import sys

    name = str(connection.settings_dict["NAME"])  # SQLite tests use a file (tests/settings.py)
    script = tmp_path / "child.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
        "import agentforge_site\nagentforge_site.setup()\n"
        "from legacy.store import get_store, jsonfiles\n" + body
    )
    env = dict(
        os.environ,
        STORAGE_MODE="dual",
        LEGACY_DATA_DIR=str(data_dir),
        DUAL_WRITE_DELAY=delay,
        DJANGO_SETTINGS_MODULE="tests.settings",
        DB_NAME=name,
        SQLITE_PATH=name,
    )
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=120)


@contextlib.contextmanager
def without_native(name: str):
    """``agentforge_core.native`` without its C ``name`` for the block: what runs where the module
    is not built. Refuses when it is not built, so no test compares Python with itself."""
    saved = getattr(native, name)
    assert saved is not None, "agentforge_core._native is not built: run scripts/build-native"
    setattr(native, name, None)
    try:
        yield
    finally:
        setattr(native, name, saved)
