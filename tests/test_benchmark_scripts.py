"""The import benchmark still runs end to end (a small size, on a scratch SQLite file).

Its figures are not checked (speed is shown by running it, not by a timed test); what is
checked is that every contender ran on the same rows and printed its line.
"""

from __future__ import annotations

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
