"""The import and row-level security benchmarks still run end to end (small sizes, scratch databases).

Its figures are not checked (speed is shown by running it, not by a timed test); what is
checked is that every contender ran on the same rows and printed its line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.mark.backends("sqlite")  # it uses its own scratch SQLite file: once per suite run is enough
def test_import_benchmark_runs_every_contender_on_the_same_rows(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "DATABASE_URL"))}
    env.update(DB_TYPE="sqlite", SQLITE_PATH=str(tmp_path / "bench.db"), DEBUG="1",
               LEGACY_IMPORT_PIPELINE_MIN_BYTES="0")  # the reader process runs even at this size
    result = subprocess.run(
        [sys.executable, "benchmarks/import_benchmark.py", "--rows", "300", "--raw-floor", "--out", str(tmp_path / "out")],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # 1 organization, 20 users with their preferences and MFA rows, 1 agent, 300 entries, 30 chats, 300 messages
    assert "rows=692" in out, out
    for contender in ("import_json:", "raw floor:", "loaddata:"):
        assert re.search(rf"^{contender}\s+[\d.]+ s\s+[\d,]+ rows/s", out, re.M), out
    assert "the 630 rows of conversations, messages, audit_logs" in out, out
    assert re.search(r"with its reader process: \d+ MiB", out), out


@pytest.mark.backends("postgresql")  # row-level security is PostgreSQL's
def test_rls_benchmark_times_every_statement_with_and_without_the_policies():
    from django.db import connection

    env = dict(os.environ)
    # Its own scratch database (<DB_NAME>_rls_bench), apart from the suite's.
    env["DB_NAME"] = f"{connection.settings_dict['NAME']}_b"
    result = subprocess.run(
        [sys.executable, "benchmarks/rls_benchmark.py", "--rows", "400", "--conversations", "4", "--repeat", "2",
         "--rounds", "1", "--json"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["messages"] == 400 and summary["audit_rows"] >= 400
    assert [r["query"] for r in summary["results"]] == [
        "newest 50 messages (autocommit)", "newest 50 messages (in atomic)",
        "audit changelist, org admin", "audit changelist, superuser",
    ]
    assert all(r["with_rls"]["median_ms"] > 0 and r["without_rls"]["median_ms"] > 0 for r in summary["results"])
