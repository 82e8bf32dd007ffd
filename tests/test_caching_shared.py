"""State shared by worker processes through the cache: two real processes, the real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.test import override_settings

from agentforge_site.dbconfig import build_caches
from operations import monitoring
from tests.test_caching import REDIS_TEST_URL, clear_own_keys

ROOT = Path(__file__).resolve().parent.parent

# One worker: waits for the common start time, claims the slow-query event of one statement
# shape, counts three slow queries and two failed transactions, says whether it won.
WORKER = """
import sys, time
import django
django.setup()
from operations import monitoring
start = float(sys.argv[1])
while time.time() < start:
    time.sleep(0.002)
won = monitoring.counters.claim_event("two-process-shape")
for _ in range(3):
    monitoring.counters.add_slow(5.0, "SELECT 1")
for _ in range(2):
    monitoring.counters.add_failure("integrity")
print("won" if won else "lost")
"""


def run_two_workers(cache_url: str, prefix: str) -> list[str]:
    # A generous socket timeout: on a loaded machine a 1 s timeout marks Redis down and each
    # worker falls back to its own memory, which is the degraded mode, not the one under test.
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CACHE_URL": cache_url,
        "CACHE_KEY_PREFIX": prefix,
        "CACHE_SOCKET_TIMEOUT": "15",
    }
    start = time.time() + 4  # both are set up (Django, the cache client) by then
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(start)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        assert "cache unavailable" not in err, err
        outputs.append(out.strip().splitlines()[-1])
    return sorted(outputs)


def test_two_workers_share_the_event_claim_and_the_counters_through_redis():
    prefix = f"af-shared-{os.getpid()}-{time.time_ns()}"
    with override_settings(CACHES=build_caches({"CACHE_URL": REDIS_TEST_URL, "CACHE_KEY_PREFIX": prefix})):
        clear_own_keys()
        try:
            assert run_two_workers(REDIS_TEST_URL, prefix) == ["lost", "won"]
            shared = monitoring.snapshot()["all_workers"]
            assert shared["slow_queries"] == 6 and shared["failed_transactions"] == 4
            assert shared["last_slow_queries_at"] is not None
            # A third process (this one) sees the claim taken as well.
            assert monitoring.counters.claim_event("two-process-shape") is False
        finally:
            clear_own_keys()


def test_without_a_shared_cache_each_worker_claims_for_itself():
    # locmem is one process's memory: both workers record the event (the old behaviour).
    assert run_two_workers("locmem://", "af-local") == ["won", "won"]


@pytest.mark.django_db
def test_health_shows_every_workers_counts(client):
    prefix = f"af-shared-health-{os.getpid()}-{time.time_ns()}"
    with override_settings(CACHES=build_caches({"CACHE_URL": REDIS_TEST_URL, "CACHE_KEY_PREFIX": prefix})):
        clear_own_keys()
        try:
            run_two_workers(REDIS_TEST_URL, prefix)
            from operations.health import build_report

            queries = build_report()["checks"]["queries"]
            assert queries["all_workers"]["failed_transactions"] == 4
            assert queries["ok"] is False  # another worker's failures just now are this server's too
        finally:
            clear_own_keys()
