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


def _import_benchmark(tmp_path, *arguments) -> str:
    """Run benchmarks/import_benchmark.py on a scratch SQLite file with 300 rows; its output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "DATABASE_URL"))}
    env.update(
        DB_TYPE="sqlite", SQLITE_PATH=str(tmp_path / "bench.db"), DEBUG="1", LEGACY_IMPORT_PIPELINE_MIN_BYTES="0"
    )  # the reader process runs even at this size
    result = subprocess.run(
        [sys.executable, "benchmarks/import_benchmark.py", "--rows", "300", *arguments, "--out", str(tmp_path / "out")],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.backends("sqlite")  # it uses its own scratch SQLite file: once per suite run is enough
def test_import_benchmark_runs_every_contender_on_the_same_rows(tmp_path):
    out = _import_benchmark(tmp_path, "--raw-floor")
    # 1 organization, 20 users with their preferences and MFA rows, 1 agent, 300 entries, 30 chats, 300 messages
    assert "rows=692" in out, out
    for contender in ("import_json:", "raw floor:", "loaddata:"):
        # wall time, rows/s, and CPU seconds per row (in process: SQLite has no server)
        line = rf"^{contender}\s+[\d.]+ s\s+[\d,]+ rows/s\s+CPU\s+[\d.]+ s \([\d.]+, in process\),\s+[\d.]+ us/row"
        assert re.search(line, out, re.M), out
    assert "the 630 rows of conversations, messages, audit_logs" in out, out
    assert re.search(r"peak RSS \d+ MiB \(\d+ with the reader\)", out), out
    assert re.search(r"^import_json / floor: \d+% of its rows/s, [\d.]+x its CPU per row$", out, re.M), out


@pytest.mark.backends("sqlite")
def test_import_benchmark_alternates_the_import_with_and_without_its_c_module(tmp_path):
    out = _import_benchmark(tmp_path, "--raw-floor", "--skip-loaddata", "--python-too", "--repeat", "2")
    for label in ("import_json", "import_json, pure Python"):
        assert len(re.findall(rf"^{label}:\s+[\d.]+ s\s+[\d,]+ rows/s\s+CPU ", out, re.M)) == 2, out
        assert len(re.findall(rf"^{label} / floor: \d+% of its rows/s, [\d.]+x its CPU per row$", out, re.M)) == 2, out
        assert re.search(
            rf"^over 2 alternated runs, CPU us/row: {label} median [\d.]+ .*; {label} / floor median ", out, re.M
        )


@pytest.mark.once  # it starts its own PostgreSQL cluster
@pytest.mark.skipif(
    not Path("/usr/lib/postgresql/15/bin/initdb").exists(), reason="needs PostgreSQL 15's server binaries"
)
def test_serve_benchmark_survives_a_database_outage_without_500s_or_lost_writes():
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "DATABASE_URL", "DJANGO_"))}
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/serve_benchmark.py",
            "--clients",
            "2",
            "--rounds",
            "1",
            "--quick",
            "--workers",
            "2",
            "--threads",
            "2",
            "--outage",
            "2",
        ],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    # Both servers answered every request of the load run; gunicorn's workers reported their pool.
    for server in ("runserver", "gunicorn WSGI"):
        line = re.search(rf"^{server}\s+2\s+(\d+)\s+[\d.]+\s+\d+\s+\d+\s+(\d+)\s+(\d+)  (.*)$", out, re.M)
        assert line, out
        assert (int(line.group(1)), line.group(2), line.group(3)) == (16, "0", "2"), line.group(0)
    assert re.search(r"^gunicorn WSGI .* \d+ of \d+ checkouts waited", out, re.M), out
    # The outage: /health/ said 503, failures were 503s only, it came back, and nothing acknowledged was lost.
    assert re.search(r"first 503 answered [\d.]+ s after the server was gone", out), out
    statuses = re.search(r"all failed requests by status: \{([^}]*)\}", out).group(1)
    assert set(re.findall(r"(\d+):", statuses)) <= {"503"}, statuses
    assert re.search(r"back: /health/ 200 [\d.]+ s after PostgreSQL restarted; 0 errors in [1-9]\d* requests", out), out
    assert re.search(
        r"worker timeouts: 0; acknowledged edits: ([1-9]\d*), found in the audit trail: \1, lost: 0", out
    ), out


@pytest.mark.backends("sqlite")  # its database part uses its own scratch SQLite file
def test_retrieval_benchmark_runs_every_contender_on_the_same_vectors(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "DATABASE_URL"))}
    env.update(
        DB_TYPE="sqlite",
        SQLITE_PATH=str(tmp_path / "bench.db"),
        DEBUG="1",
        VECTOR_INDEX_DIR=str(tmp_path / "vector-index"),
        VECTOR_ANN_MIN_VECTORS="200",
    )
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/retrieval_benchmark.py",
            "--vectors",
            "2000",
            "--dim",
            "16",
            "--orgs",
            "4",
            "--queries",
            "10",
            "--graph-max",
            "2000",
            "--db-chunks",
            "300",
            "--old-max",
            "100",
        ],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "== 2,000 vectors x 16 in one set" in out, out
    assert re.search(r"^exact \(ours\):\s+p50\s+[\d.]+ ms\s+p95\s+[\d.]+ ms\s+recall@10 1\.000$", out, re.M), out
    for contender in (
        r"numpy brute force:",
        r"faiss IVF\d+ nprobe\s+\d+:",
        r"hnswlib M16 ef\s+\d+:",
        r"usearch M16 ef\s+\d+:",
    ):
        assert re.search(rf"^{contender}\s+p50\s+[\d.]+ ms\s+p95\s+[\d.]+ ms\s+recall@10 [01]\.\d{{3}}", out, re.M), out
    assert re.search(r"^spread over 4 organizations \(500 each, exact\): p50", out, re.M), out
    assert "== sqlite: 300 chunks x 16 with text, one organization ==" in out, out
    # 300 vectors with VECTOR_ANN_MIN_VECTORS=200: the database part goes through the approximate index.
    assert re.search(
        r"^semantic_search \(approximate\): p50 .* recall@10 [01]\.\d{3}  topic precision@10 [01]\.\d{3}$", out, re.M
    ), out
    for contender in ("keyword_hits:", r"hybrid_search \(RRF\):", r"old hybrid \(both lists loaded\):"):
        assert re.search(
            rf"^{contender}\s+p50\s+[\d.]+ ms\s+p95\s+[\d.]+ ms  topic precision@10 [01]\.\d{{3}}$", out, re.M
        ), out
    assert re.search(r"^old most_similar on 100 chunks:\s+p50\s+[\d.]+ ms\s+p95\s+[\d.]+ ms", out, re.M), out
    assert re.search(r"^reference, one round trip \(SELECT 1\): p50", out, re.M), out


@pytest.mark.backends("sqlite")  # its own scratch SQLite file: once per suite run is enough
def test_signin_timing_benchmark_prints_every_kind_beside_the_alternative(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "DATABASE_URL"))}
    env.update(DB_TYPE="sqlite")
    result = subprocess.run(
        [sys.executable, "benchmarks/signin_timing_benchmark.py", "--repeat", "1"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert len(re.findall(r"^account +equalised clock +equalised CPU +before clock +before CPU$", out, re.M)) == 2, out
    for kind in ("unknown email", "imported pbkdf2 100000", "bcrypt_sha256", "pbkdf2 1000000", "max / min"):
        assert len(re.findall(rf"^{kind}(?: +[\d.]+x?){{4}}$", out, re.M)) == 2, (kind, out)


@pytest.mark.backends("sqlite")  # it uses its own scratch SQLite file: once per suite run is enough
def test_cache_benchmark_prints_every_contender_for_every_read(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "DATABASE_URL", "CACHE_"))}
    env.update(
        DB_TYPE="sqlite",
        SQLITE_TEST_PATH=str(tmp_path / "bench.db"),
        DEBUG="1",
        CACHE_BENCH_REDIS_URL="redis://127.0.0.1:6379/14",
    )
    result = subprocess.run(
        [sys.executable, "benchmarks/cache_benchmark.py", "--orgs", "2", "--reads", "20"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for contender in ("ORM, cache off", "local memory (locmem)", "Redis", "bare SELECT 1 round trip"):
        assert re.search(rf"^{re.escape(contender)}(\s+\d[\d,]* \(\d[\d,]*\)){{3}}$", result.stdout, re.M), (
            result.stdout
        )


@pytest.mark.backends("postgresql")  # row-level security is PostgreSQL's
def test_rls_benchmark_times_every_statement_with_and_without_the_policies():
    from django.db import connection

    env = dict(os.environ)
    # Its own scratch database (<DB_NAME>_rls_bench), apart from the suite's.
    env["DB_NAME"] = f"{connection.settings_dict['NAME']}_b"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/rls_benchmark.py",
            "--rows",
            "400",
            "--conversations",
            "4",
            "--repeat",
            "2",
            "--rounds",
            "1",
            "--json",
        ],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["messages"] == 400 and summary["audit_rows"] >= 400
    assert [r["query"] for r in summary["results"]] == [
        "newest 50 messages (autocommit)",
        "newest 50 messages (in atomic)",
        "audit changelist, org admin",
        "audit changelist, superuser",
    ]
    assert all(r["with_rls"]["median_ms"] > 0 and r["without_rls"]["median_ms"] > 0 for r in summary["results"])


@pytest.mark.backends("postgresql")  # the pattern_ops copies it measures were PostgreSQL's
@pytest.mark.django_db
def test_index_benchmark_fills_each_table_with_and_without_the_dropped_indexes():
    from django.db import connection

    env = dict(os.environ, DB_NAME=connection.settings_dict["NAME"], DEBUG="1")  # the test database: its tables
    result = subprocess.run(
        [sys.executable, "benchmarks/index_benchmark.py", "--rows", "300", "--rounds", "2"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for table, now, before in (("messages", 5, 6), ("conversations", 7, 9), ("audit_logs", 17, 18)):
        line = rf"^{table}\s+{now} idx\s+[\d.]+ s\s+[\d.]+ us/row\s+{before} idx\s+[\d.]+ s\s+[\d.]+ us/row  "
        assert re.search(line, result.stdout, re.M), result.stdout
