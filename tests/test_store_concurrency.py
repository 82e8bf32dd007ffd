"""Several processes saving through the dual store at once lose nothing, in the JSON
files or in the database, and leave the two sides equal.

The children are real processes (``agentforge_site.setup()`` in a script) pointed at the
test database. On SQLite an in-memory test database is copied to a file first (the
children cannot see memory); with ``SQLITE_TEST_PATH`` set, the file is used directly.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

PROJECT = Path(__file__).resolve().parent.parent
SAMPLE = PROJECT / "sample-data"
WORKERS = 4
PER_WORKER = 12
SHARED_AGENT = "00000000-0000-4000-8000-00000000beef"

CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {project!r})
    import agentforge_site
    agentforge_site.setup()
    from legacy.store import get_store, dual_write_failures

    store = get_store()
    assert store.mode == "dual", store.mode
    worker, count = sys.argv[1], int(sys.argv[2])
    base = {{"icon": "\\U0001f916", "goal": "", "tool_ids": [], "status": "draft", "is_active": True,
             "created_at": "2026-01-20T10:00:00.123456", "updated_at": "2026-01-20T10:00:00.123456"}}
    for i in range(count):
        own = "%08x-0000-4000-8000-%012x" % (int(worker), i)
        store.save("agents", dict(base, id=own, name=f"agent {{i}} of worker {{worker}}"))
        store.save("agents", dict(base, id={shared!r}, name=f"shared, last written by {{worker}}/{{i}}"))
        store.save("security/audit_logs", {{
            "id": "%08x-1111-4000-8000-%012x" % (int(worker), i), "org_id": "org_default",
            "user_id": "85900a07-fe70-473b-99d2-795a46862009", "user_email": "admin@agentforge.to",
            "user_name": "Admin", "session_id": None, "action": "update", "resource_type": "agent",
            "resource_id": own, "resource_name": None, "details": {{"worker": worker, "i": i}}, "changes": None,
            "ip_address": "127.0.0.1", "user_agent": None, "request_id": None, "request_path": None,
            "request_method": None, "success": True, "error_message": None,
            "timestamp": "2026-02-01T00:%02d:%02d.000001" % (int(worker), i),
        }})
    print("failures", dual_write_failures())
    """
)


def _db_env(db_name: str) -> dict:
    return {"DB_NAME": db_name, "SQLITE_PATH": db_name}


@pytest.mark.django_db(transaction=True)
def test_concurrent_dual_writers_lose_nothing(tmp_path):
    from accounts.models import Organization

    Organization.get_default()
    data_dir = tmp_path / "data"
    shutil.copytree(SAMPLE, data_dir)
    for path in data_dir.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    call_command("import_json", str(data_dir), verbosity=0)

    name = str(connection.settings_dict["NAME"])
    in_memory = connection.vendor == "sqlite" and ("memory" in name or name == ":memory:")
    if in_memory:
        # Copy the in-memory test database (schema and the import) to a file for the children.
        name = str(tmp_path / "children.sqlite3")
        target = sqlite3.connect(name)
        connection.ensure_connection()
        connection.connection.backup(target)
        target.execute("PRAGMA journal_mode=WAL")
        target.close()

    script = tmp_path / "child.py"
    script.write_text(CHILD.format(project=str(PROJECT), shared=SHARED_AGENT))
    env = dict(
        os.environ,
        STORAGE_MODE="dual",
        LEGACY_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="tests.settings",
        **_db_env(name),
    )
    children = [
        subprocess.Popen(
            [sys.executable, str(script), str(n + 1), str(PER_WORKER)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(WORKERS)
    ]
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err.decode()[-3000:]
        assert out.decode().strip() == "failures 0"

    own_ids = {"%08x-0000-4000-8000-%012x" % (w + 1, i) for w in range(WORKERS) for i in range(PER_WORKER)}
    log_ids = {"%08x-1111-4000-8000-%012x" % (w + 1, i) for w in range(WORKERS) for i in range(PER_WORKER)}

    # The JSON files: every record of every process is there, nothing torn or left behind.
    agents = json.loads((data_dir / "agents.json").read_text())
    assert set(agents) == own_ids | {SHARED_AGENT}
    logs = json.loads((data_dir / "security" / "audit_logs.json").read_text())
    assert len(logs) == 29 + len(log_ids)
    assert log_ids <= {entry["id"] for entry in logs}
    assert not list(data_dir.rglob("*.tmp"))

    # The database: the same, and the two sides agree record by record (the shared agent
    # too: whichever write committed last is on both sides).
    if in_memory:
        db = sqlite3.connect(name)
        db_agents = {row[0] for row in db.execute("SELECT legacy_id FROM agents")}
        db_logs = {row[0] for row in db.execute("SELECT legacy_id FROM audit_logs WHERE legacy_id IS NOT NULL")}
        db.close()
        result = subprocess.run(
            [sys.executable, "manage.py", "verify_parity", "--data-dir", str(data_dir)],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            timeout=300,
        )
        assert result.returncode == 0, (result.stdout + result.stderr).decode()[-3000:]
    else:
        from agentforge_agents.models import Agent
        from security.models import AuditLog

        db_agents = set(Agent.all_orgs.values_list("legacy_id", flat=True))
        db_logs = set(AuditLog.all_orgs.filter(legacy_id__isnull=False).values_list("legacy_id", flat=True))
        from io import StringIO

        out = StringIO()
        call_command("verify_parity", "--data-dir", str(data_dir), stdout=out)
        assert "No drift" in out.getvalue()

        from security.audit import verify_all

        assert all(report.ok for report in verify_all())  # the hash chain took every append
    assert db_agents == own_ids | {SHARED_AGENT}
    assert log_ids <= db_logs and len(db_logs) == 29 + len(log_ids)
