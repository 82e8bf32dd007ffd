"""A served process under load when PostgreSQL stops: /health/ says 503 within a second, requests
fail fast with 503 (never 500), and everything answers again by itself once the server is back.

The test starts a PostgreSQL cluster of its own (the shared server is never stopped) and
gunicorn through scripts/serve, with a pool wait (DB_POOL_TIMEOUT) of 5 s: without the
per-process "database down" switch, every worker thread waits that long and /health/ queues
behind them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.test_serving import CREATE_ADMIN, free_port, manage, production_env, sign_in, start, stop, wait_for_health

PG_BIN = Path("/usr/lib/postgresql/15/bin")

pytestmark = [
    pytest.mark.backends("sqlite"),  # the cluster is its own: once per suite run is enough
    pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="needs PostgreSQL 15's server binaries"),
]


class Cluster:
    """A throwaway PostgreSQL cluster on a free port under /var/tmp."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="af-outage-pg-", dir="/var/tmp"))
        self.base.chmod(0o755)
        self.port = free_port()

    def run(self, *command, check=True):
        argv = [str(PG_BIN / command[0]), *command[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=120)

    def init(self):
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
        self.run("initdb", "-D", str(self.base / "data"), "-U", "postgres", "--auth=trust", "--no-sync")
        self.start()
        subprocess.run(
            [
                str(PG_BIN / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE agentforge_outage",
            ],
            check=True,
            capture_output=True,
        )

    def start(self):
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base}"
        self.run("pg_ctl", "-D", str(self.base / "data"), "-l", str(self.base / "pg.log"), "-o", options, "-w", "start")

    def stop(self, mode="fast"):
        self.run("pg_ctl", "-D", str(self.base / "data"), "-m", mode, "-w", "stop", check=False)

    def remove(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def served(tmp_path):
    """gunicorn (2 workers x 3 threads) on a migrated cluster with an admin; yields (base URL, cluster)."""
    cluster = Cluster()
    server = None
    try:
        cluster.init()
        port = free_port()
        env = production_env(
            tmp_path,
            DB_TYPE="postgresql",
            DB_HOST="127.0.0.1",
            DB_PORT=str(cluster.port),
            DB_USER="postgres",
            DB_NAME="agentforge_outage",
            DB_POOL_SIZE="2",
            DB_MAX_OVERFLOW="1",
            DB_POOL_TIMEOUT="5",
            BIND=f"127.0.0.1:{port}",
            WEB_CONCURRENCY="2",
            WEB_THREADS="3",
            WEB_ACCESS_LOG="false",
        )
        for args in (("migrate", "--verbosity", "0"), ("shell", "-c", CREATE_ADMIN)):
            result = manage(env, *args, timeout=300)
            assert result.returncode == 0, result.stdout + result.stderr
        log_path = tmp_path / "serve.log"
        server = start(["scripts/serve"], env, log_path)
        base = f"http://127.0.0.1:{port}"
        assert wait_for_health(base, server, log_path) == 200
        yield base, cluster, log_path
    finally:
        if server is not None:
            stop(server)
        cluster.remove()


def signed_in(base):
    opener, response = sign_in(base)
    with response:
        response.read()
    return opener


def fresh_page_status(base) -> int:
    """Sign in anew and open a page: the first status that is not 200 (the sign-in's or the page's)."""
    try:
        opener = signed_in(base)
    except urllib.error.HTTPError as error:
        return error.code
    return status_of(opener, base + "/admin/accounts/user/")


def status_of(opener, url, timeout=30) -> int:
    try:
        with opener.open(url, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0  # no answer


def test_health_says_503_within_a_second_of_the_database_stopping_under_load_and_recovers(served):
    base, cluster, log_path = served
    stop_all = threading.Event()
    page_statuses: list[int] = []
    health: list[tuple[float, int]] = []  # (when the answer came, status)

    def browse(opener):
        while not stop_all.is_set():
            page_statuses.append(status_of(opener, base + "/admin/accounts/user/"))

    def ask_health():
        status = status_of(urllib.request.build_opener(), base + "/health/", timeout=15)
        health.append((time.monotonic(), status))

    def poll_health():
        # A load balancer's probe every 0.1 s, each on its own connection, none waiting for the last.
        askers = []
        while not stop_all.is_set():
            askers.append(threading.Thread(target=ask_health))
            askers[-1].start()
            time.sleep(0.1)
        for asker in askers:
            asker.join(20)

    browsers = [threading.Thread(target=browse, args=(signed_in(base),)) for _ in range(12)]
    poller = threading.Thread(target=poll_health)
    for thread in browsers + [poller]:
        thread.start()
    try:
        time.sleep(2)
        cluster.stop("immediate")
        down_at = time.monotonic()  # pg_ctl -w returns once the server is gone
        time.sleep(4)
        first_503 = min((at for at, status in health if at >= down_at and status == 503), default=None)
        assert first_503 is not None, health
        assert first_503 - down_at < 1.0, first_503 - down_at
        # From then on, every answer while it stays down is 503 (nothing answered 200 from a dead database).
        assert {status for at, status in health if first_503 + 1 <= at <= down_at + 4} == {503}
        cluster.start()
        back_at = time.monotonic()
        deadline = back_at + 20
        while time.monotonic() < deadline and not [s for at, s in health if at > back_at + 0.5 and s == 200]:
            time.sleep(0.2)
        assert [s for at, s in health if at > back_at + 0.5 and s == 200], health[-5:]
        # The workers' pools are back too: signing in and a signed-in page answer 200 again. Each
        # worker notices the server's return on its own, so a sign-in may still get one 503.
        while time.monotonic() < deadline and fresh_page_status(base) != 200:
            time.sleep(0.2)
        assert fresh_page_status(base) == 200
    finally:
        stop_all.set()
        for thread in browsers + [poller]:
            thread.join(60)
    # The outage answered 503s, never a 500, and no worker hung.
    assert set(page_statuses) <= {200, 503}, sorted(set(page_statuses))
    assert 503 in page_statuses and 200 in page_statuses
    assert "WORKER TIMEOUT" not in log_path.read_text()
