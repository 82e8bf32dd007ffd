"""Backup -> flush -> restore gives the same rows, with the real tools, on the running backend."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from agentforge_core.tenancy import unscoped
from operations.backup import (
    BackupError,
    RestoreRefused,
    backup_database,
    detect_format,
    nonempty_tables,
    project_models,
    restore_database,
    row_counts,
)

pytestmark = pytest.mark.django_db(transaction=True)

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_slow_query_events(settings):
    # A TRUNCATE of every table can take over a second on PostgreSQL; its slow_query event
    # would be a row in security_events between "flush" and "restore".
    settings.DB_SLOW_QUERY_MS = 10**9


def populate(make_org, make_user):
    """A little of everything: secrets, JSON, binary, M2M through models, auto_now_add, nullable org."""
    from agentforge_agents.models import Agent, AgentTool, AgentVersion, Tool
    from agentforge_core.tenancy import org_scope, unscoped
    from knowledge.models import Document, DocumentChunk
    from security.models import SecurityEvent
    from settings_app.models import SystemSetting

    org = make_org("Acme", google_client_secret="g-secret-value")
    other = make_org("Globex")
    alice = make_user(org, email="alice@example.com", password="correct horse battery 9", is_staff=True)
    make_user(other, email="bob@example.com")
    with org_scope(org):
        tool = Tool.objects.create(
            type="api",
            name="Weather",
            credentials={"api_key": "sk-test-123"},
            config={"url": "https://example.com"},
            owner=alice,
        )
        agent = Agent.objects.create(
            name="Helper",
            goal="help",
            personality={"tone": "warm", "emoji": "\U0001f916"},
            owner=alice,
            tasks=["a", "b"],
        )
        AgentTool.objects.create(agent=agent, tool=tool, tool_ref=str(tool.pk), position=0)
        AgentVersion.objects.create(agent=agent, version=1, snapshot={"name": "Helper"})
        doc = Document.objects.create(tool=tool, title="Manual", content="Ünïcode text")
        chunk = DocumentChunk(tool=tool, document=doc, chunk_id="1", text="hello", index_position=1)
        chunk.set_embedding([0.5, -1.25, 3.0], model="test")
        chunk.save()
    with unscoped():
        SecurityEvent.all_orgs.create(org=None, event_type="suspicious_activity", details={"k": [1, 2]})
    SystemSetting.objects.create(key="openai_api_key", is_secret=True, secret_value="sk-provider-456")
    return org


def snapshot() -> dict:
    """Every row of every project table, in pk order, through the unscoped base managers.

    Content types are compared by natural key: a portable restore into a fresh schema
    gives them new ids (the file names them by app label and model).
    """
    from django.contrib.contenttypes.models import ContentType

    result = {}
    for model in project_models():
        fields = model._meta.concrete_fields
        rows = []
        for row in model._base_manager.order_by("pk").values_list(*[f.attname for f in fields]):
            values = []
            for f, v in zip(fields, row):
                if isinstance(v, (memoryview, bytearray)):
                    v = bytes(v)
                elif v is not None and f.is_relation and f.related_model is ContentType:
                    v = ContentType.objects.get_for_id(v).natural_key()
                values.append(v)
            rows.append(tuple(values))
        result[model._meta.db_table] = rows
    return result


def raw_column(table: str, column: str) -> list:
    with unscoped(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {connection.ops.quote_name(column)} FROM {connection.ops.quote_name(table)} "
            f"WHERE {connection.ops.quote_name(column)} IS NOT NULL"
        )
        return sorted(str(r[0]) for r in cursor.fetchall())


@pytest.mark.parametrize("method", ["native", "portable"])
def test_backup_flush_restore_gives_the_same_rows(make_org, make_user, tmp_path, method, settings):
    settings.BACKUP_DIR = str(tmp_path / "backups")
    populate(make_org, make_user)
    before = snapshot()
    ciphertext = raw_column("tools", "credentials")
    assert sum(len(rows) for rows in before.values()) >= 10
    assert ciphertext and all(c.startswith("fernet$") for c in ciphertext)

    path = backup_database(None, method=method)
    assert path.parent == tmp_path / "backups" and path.stat().st_size > 0
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    kind = detect_format(path)
    assert kind == (connection.vendor if method == "native" else "portable")
    if method == "portable":
        # Secrets stay ciphertext in the file; nothing decrypted reaches the disk.
        text = gzip.open(path, "rt").read()
        assert "sk-test-123" not in text and "sk-provider-456" not in text and "g-secret-value" not in text
        assert ciphertext[0] in text
        assert json.loads(text.splitlines()[-1])["objects"] >= 10

    call_command("flush", interactive=False, verbosity=0)
    assert not nonempty_tables()
    assert all(n == 0 for n in row_counts().values())

    result = restore_database(path)
    assert result.method == kind
    after = snapshot()
    assert after == before
    # The audit trail's hash chains still verify.
    from security.audit import verify_all

    reports = verify_all()
    assert reports and all(r.ok for r in reports), [(r.chain, r.reason) for r in reports if not r.ok]
    # The same ciphertext, not a re-encryption, and still readable through the model.
    assert raw_column("tools", "credentials") == ciphertext
    from agentforge_agents.models import Tool

    assert Tool.all_orgs.get().credentials == {"api_key": "sk-test-123"}
    # Login still works with the restored hash.
    from accounts.models import User

    assert User.all_orgs.get(email="alice@example.com").check_password("correct horse battery 9")

    # A database with rows is refused without force, and replaced with it.
    with pytest.raises(RestoreRefused, match="--force"):
        restore_database(path)
    from agentforge_agents.models import Agent

    Agent.all_orgs.update(name="changed")
    restore_database(path, force=True)
    assert snapshot() == before


def test_backup_checks_and_refuses_damaged_files(make_org, make_user, tmp_path):
    populate(make_org, make_user)
    path = backup_database(tmp_path)
    assert path.parent == tmp_path
    damaged = tmp_path / ("damaged" + "".join(path.suffixes))
    data = path.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    call_command("flush", interactive=False, verbosity=0)
    with pytest.raises(BackupError):
        restore_database(damaged)
    # Nothing was touched by the refused restore.
    assert not nonempty_tables()

    portable = backup_database(tmp_path / "p.jsonl.gz", method="portable")
    cut = tmp_path / "cut.jsonl.gz"
    lines = gzip.open(portable, "rt").read().splitlines()
    with gzip.open(cut, "wt") as fh:
        fh.write("\n".join(lines[:-1]) + "\n")  # no trailer: truncated
    with pytest.raises(BackupError, match="truncated"):
        restore_database(cut)
    with pytest.raises(BackupError, match="no such backup file"):
        restore_database(tmp_path / "missing.dump")


def test_backup_and_restore_commands(make_org, make_user, tmp_path):
    populate(make_org, make_user)
    before = snapshot()
    env_name = connection.settings_dict["NAME"]
    out = tmp_path / "cmd-backup"
    from io import StringIO

    buf = StringIO()
    call_command("backup", "--output", str(out), stdout=buf)
    message = buf.getvalue()
    assert message.startswith(f"backup written to {out} (") and (" KB)" in message or " MB)" in message), message
    assert out.is_file()
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not empty.*--force"):
        call_command("restore", str(out), stdout=StringIO())
    buf = StringIO()
    call_command("restore", str(out), "--force", stdout=buf)
    assert "restored" in buf.getvalue()
    assert snapshot() == before
    assert env_name == connection.settings_dict["NAME"]


@pytest.mark.backends("postgresql", "mysql")
def test_password_never_on_the_command_line(monkeypatch, tmp_path):
    """The tools get the password through PGPASSWORD/MYSQL_PWD only."""
    from operations import backup as module

    seen = []
    real_run = subprocess.run

    def spy(cmd, *args, **kwargs):
        seen.append((cmd, kwargs.get("env", {})))
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(module.subprocess, "run", spy)
    monkeypatch.setitem(connection.settings_dict, "PASSWORD", "pw-not-on-argv")
    monkeypatch.setitem(connection.settings_dict, "MIGRATION_PASSWORD", "pw-not-on-argv")  # PostgreSQL's owner
    try:
        backup_database(tmp_path)
    except BackupError:
        pass  # the local servers may refuse a password they do not expect; the argv is what matters
    assert seen
    for cmd, env in seen:
        assert "pw-not-on-argv" not in " ".join(cmd)
    first_env = seen[0][1]
    assert "pw-not-on-argv" in (first_env.get("PGPASSWORD"), first_env.get("MYSQL_PWD"))


def test_restore_refuses_a_backup_of_another_backend(tmp_path, db):
    fake = tmp_path / "other.dump"
    fake.write_bytes(
        b"PGDMP" + b"\0" * 100 if connection.vendor != "postgresql" else b"SQLite format 3\x00" + b"\0" * 100
    )
    with pytest.raises(BackupError, match="portable"):
        restore_database(fake)


def test_backup_command_on_a_dead_database_is_one_line(tmp_path):
    env = _dead_env()
    proc = subprocess.run(
        [sys.executable, "manage.py", "backup", "--settings=tests.settings", "--output", str(tmp_path)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir())  # no partial file left behind


def _dead_env() -> dict:
    import os

    env = dict(os.environ)
    if connection.vendor == "sqlite":
        env["SQLITE_PATH"] = "/nonexistent-agentforge-dir/x/db.sqlite3"
    else:
        env["DB_PORT"] = "1"
    env["DB_POOL_TIMEOUT"] = "30"
    return env
