"""schema_sql renders every migration for SQL Server and Oracle without a server,
and the schema respects what those databases need."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.apps import apps
from django.db import models

from operations.schema import offline_connection, render_schema

pytestmark = pytest.mark.once  # renders DDL without connecting

BASE = Path(__file__).resolve().parent.parent

GUIDE_TABLES = [
    "users",
    "user_sessions",
    "mfa_settings",
    "password_history",
    "roles",
    "permissions",
    "role_permissions",
    "user_roles",
    "organizations",
    "departments",
    "groups",
    "agents",
    "agent_versions",
    "agent_tools",
    "tools",
    "tool_permissions",
    "documents",
    "document_chunks",
    "conversations",
    "messages",
    "attachments",
    "audit_logs",
    "security_events",
    "oauth_configs",
    "ldap_configs",
    "api_keys",
    "system_settings",
    "org_settings",
    "user_preferences",
]
OUR_APPS = ("accounts", "agents", "knowledge", "conversations", "security", "settings_app", "legacy")


def our_models():
    return [m for m in apps.get_models() if m._meta.app_label in OUR_APPS]


@pytest.fixture(scope="module", params=["sqlserver", "oracle"])
def rendered(request):
    statements = [s for _, _, sql in render_schema(request.param) for s in sql]
    return request.param, statements


def test_every_migration_renders_every_table(rendered):
    db_type, statements = rendered
    text = "\n".join(statements)
    for table in GUIDE_TABLES:
        name = table.upper() if db_type == "oracle" else table
        quoted = f'"{name}"' if db_type == "oracle" else f"[{name}]"
        assert f"CREATE TABLE {quoted} (" in text, f"{table} missing from the {db_type} DDL"


def test_identifiers_fit_the_backend(rendered):
    db_type, statements = rendered
    limit = 30 if db_type == "oracle" else 128
    pattern = r'"([^"]+)"' if db_type == "oracle" else r"\[([^\]]+)\]"
    names = {name for s in statements for name in re.findall(pattern, s)}
    assert names, "no identifiers found"
    too_long = sorted(n for n in names if len(n) > limit)
    assert not too_long, f"{db_type} identifiers over {limit} characters: {too_long}"


def test_json_columns_are_checked_json(rendered):
    db_type, statements = rendered
    text = "\n".join(statements)
    json_fields = [(m, f) for m in our_models() for f in m._meta.concrete_fields if isinstance(f, models.JSONField)]
    assert json_fields
    for model, field in json_fields:
        column = field.column.upper() if db_type == "oracle" else field.column
        check = f'CHECK ("{column}" IS JSON)' if db_type == "oracle" else f'CHECK ((ISJSON ("{column}") = 1))'
        assert check in text, f"{model._meta.db_table}.{field.column} is not a checked JSON column on {db_type}"


KEY_BYTES = {
    "bigint": 8,
    "int": 4,
    "smallint": 2,
    "bit": 1,
    "datetimeoffset": 10,
    "datetime2": 8,
    "uniqueidentifier": 16,
    "date": 3,
    "float": 8,
    "real": 4,
}


def sqlserver_key_bytes(db_type: str) -> int:
    db_type = db_type.lower()
    match = re.match(r"n?(var)?char\((\d+|max)\)", db_type)
    if match:
        if match.group(2) == "max":
            return 10**6
        return int(match.group(2)) * (2 if db_type.startswith("n") else 1)
    return KEY_BYTES.get(db_type.split("(")[0].split(" ")[0], 8)


def indexed_column_sets(model):
    """Every column list the schema indexes: Meta indexes, unique constraints, unique and indexed fields."""
    meta = model._meta
    sets = [[meta.get_field(f.lstrip("-")) for f in index.fields] for index in meta.indexes]
    sets += [
        [meta.get_field(f) for f in c.fields]
        for c in meta.constraints
        if isinstance(c, models.UniqueConstraint) and c.fields
    ]
    sets += [[f] for f in meta.concrete_fields if (f.unique and not f.primary_key) or f.db_index]
    return sets


@pytest.mark.parametrize("db_type", ["sqlserver", "oracle", "mysql", "postgresql"])
def test_no_index_on_an_unbounded_text_column(db_type):
    connection = offline_connection(db_type)
    unbounded = {"sqlserver": "nvarchar(max)", "oracle": "NCLOB", "mysql": "longtext", "postgresql": "text"}[db_type]
    offenders = []
    for model in our_models():
        for fields in indexed_column_sets(model):
            for field in fields:
                if (field.db_type(connection) or "").startswith(unbounded):
                    offenders.append(f"{model._meta.db_table}.{field.column}")
    assert not offenders, f"indexes on unbounded text columns on {db_type}: {offenders}"


def test_sqlserver_index_keys_fit_900_bytes():
    connection = offline_connection("sqlserver")
    too_big = []
    for model in our_models():
        for fields in indexed_column_sets(model):
            size = sum(sqlserver_key_bytes(f.db_type(connection)) for f in fields)
            if size > 900:
                too_big.append((model._meta.db_table, [f.column for f in fields], size))
    assert not too_big, f"SQL Server index keys over 900 bytes: {too_big}"


def test_schema_sql_command_never_connects():
    """DB_HOST points nowhere: rendering must still work, for both server-only backends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL", "SQLITE"))}
    for db_type, port in (("sqlserver", "1433"), ("oracle", "1521")):
        env.update(
            ENV_FILE="",
            DJANGO_SETTINGS_MODULE="tests.settings",
            DB_TYPE=db_type,
            DB_HOST="unreachable.invalid",
            DB_PORT=port,
            DB_NAME="agentforge",
            DB_USER="af",
        )
        result = subprocess.run(
            [sys.executable, str(BASE / "manage.py"), "schema_sql"],
            env=env,
            cwd=BASE,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert f"schema for {db_type}" in result.stdout
        for table in GUIDE_TABLES:
            assert re.search(rf'CREATE TABLE ["\[]{table}["\]] \(', result.stdout, re.IGNORECASE), (db_type, table)
        assert int(re.search(r"-- (\d+) statements", result.stdout).group(1)) > 100
