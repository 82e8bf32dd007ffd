#!/usr/bin/env python
"""The production server under load and through a database outage, beside runserver, in one run.

Starts a PostgreSQL cluster of its own (initdb / pg_ctl from /usr/lib/postgresql/15/bin, port
5440, data under /tmp; the shared servers are never touched), migrates it, and adds an admin,
users, agents and audit entries. Then, against 127.0.0.1 only, for each server and each number
of concurrent clients:

  runserver        manage.py runserver --noreload (threaded), the development server
  gunicorn WSGI    scripts/serve: gthread workers (WEB_CONCURRENCY x WEB_THREADS), the pool
  uvicorn ASGI     uvicorn --workers WEB_CONCURRENCY on agentforge_site.asgi

each client signs in through the login form, then repeats: the users, agents and audit-log
changelists, /health/, and one admin edit (its own agent's goal). Printed: requests answered as
expected per second (ok/s), p50 and p99 in ms of those, errors (5xx, no answer within 30 s, or an
unexpected answer), and the pool's waits (gunicorn's workers log their pool counters on exit).

Then the outage, on gunicorn: while clients edit and browse and a poller asks /health/ every
0.1 s, PostgreSQL is stopped (pg_ctl -m immediate, a crash) for 5 s and started again. Printed:
how long /health/ took to say 503, how the clients' requests failed (503s, 500s, slowest
failure), how long until everything answered again, worker timeouts, and every acknowledged edit
looked up afterwards in the audit trail (written in the same transaction as the edit).

    .venv/bin/python benchmarks/serve_benchmark.py                 # 8 and 32 clients
    .venv/bin/python benchmarks/serve_benchmark.py --clients 8 --rounds 5 --quick

Options: --clients N [N ...] (8 32), --rounds N (loops per client, 12), --seconds N (cap per
load run, 60), --workers N (2), --threads N (4), --outage N (seconds, 5), --no-outage,
--quick (gunicorn and runserver only, no ASGI), --keep (leave the cluster's directory).
Every request loop is bounded in count and time and everything it starts is stopped at exit.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT = 5440
HOST = "127.0.0.1"
PASSWORD = "Bench-serve-passphrase-7"
ENCRYPTION_KEY = "dGVzdC1rZXktb25lLWZvci1hZ2VudGZvcmdlLXRlc3Q="
PAGES = ("/admin/accounts/user/", "/admin/agents/agent/", "/admin/security/auditlog/", "/health/")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=12, help="loops of the page sequence per client")
    parser.add_argument("--seconds", type=float, default=60, help="time cap of one load run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--outage", type=float, default=5)
    parser.add_argument("--no-outage", action="store_true")
    parser.add_argument("--quick", action="store_true", help="gunicorn and runserver only")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--by-page", action="store_true", help="also p50/p99 of each kind of request")
    return parser.parse_args()


# --- the PostgreSQL cluster of the benchmark ---------------------------------------------------


def as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class Cluster:
    def __init__(self, base: Path):
        self.data = base / "pg"
        self.log = base / "pg.log"
        self.socket_dir = base

    def run(self, *command, check=True):
        return subprocess.run(
            as_postgres([str(PG_BIN / command[0]), *command[1:]]),
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def init(self):
        if os.geteuid() == 0:
            shutil.chown(self.socket_dir, "postgres")
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        self.start()

    def start(self):
        options = f"-p {PG_PORT} -c listen_addresses={HOST} -k {self.socket_dir} -c max_connections=200"
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode="fast"):
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def psql(self, sql: str, db="agentforge_bench") -> str:
        return subprocess.run(
            [str(PG_BIN / "psql"), "-h", HOST, "-p", str(PG_PORT), "-U", "postgres", "-d", db, "-tAc", sql],
            check=True,
            capture_output=True,
            text=True,
        ).stdout


def app_env(base: Path, **extra) -> dict:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL", "DJANGO_", "SQLITE_", "WEB_"))
    }
    env.update(
        ENV_FILE="",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ENCRYPTION_KEY=ENCRYPTION_KEY,
        ALLOWED_HOSTS=HOST,
        DB_TYPE="postgresql",
        DB_HOST=HOST,
        DB_PORT=str(PG_PORT),
        DB_USER="postgres",
        DB_NAME="agentforge_bench",
        STATIC_ROOT=str(base / "static"),
        WEB_ACCESS_LOG="false",
        # A pool per worker process sized to its threads; a short wait, so an outage fails fast.
        DB_POOL_SIZE="2",
        DB_POOL_TIMEOUT="1",
    )
    env.update(extra)
    return env


POPULATE = """
from accounts.models import Organization, User
from agentforge_agents.models import Agent
from agentforge_core.tenancy import org_scope
from security.audit import record_auth_event
org = Organization.get_default()
admin = User.all_orgs.create_superuser("bench@serve.test", "{password}", org=org)
with org_scope(org):
    for i in range(60):
        User.all_orgs.create_user(email=f"user{{i:02d}}@serve.test", password=None, org=org, first_name=f"User {{i}}")
    ids = [str(Agent.objects.create(name=f"bench agent {{i:02d}}", goal="start", owner=admin).pk) for i in range({agents})]
    for i in range(300):
        record_auth_event("login_failed", email=f"nobody{{i}}@serve.test", org_id=org.pk, success=False)
print(" ".join(ids))
"""


# --- clients ---------------------------------------------------------------------------------------


class FormFields(HTMLParser):
    """The fields a browser would submit from the page's main form (inputs, selects, textareas)."""

    def __init__(self):
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._select = self._textarea = None
        self._text: list[str] = []
        self._option_selected = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("name"):
            kind = (a.get("type") or "text").lower()
            if kind in ("submit", "button", "file", "image", "reset"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self.fields.append((a["name"], a.get("value") or ("on" if kind == "checkbox" else "")))
        elif tag == "select" and a.get("name"):
            self._select, self._option_selected = a["name"], False
        elif tag == "option" and self._select and "selected" in a:
            self.fields.append((self._select, a.get("value", "")))
            self._option_selected = True
        elif tag == "textarea" and a.get("name"):
            self._textarea, self._text = a["name"], []

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea" and self._textarea:
            self.fields.append((self._textarea, "".join(self._text).lstrip("\n")))
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self._text.append(data)


@dataclass
class Result:
    kind: str
    status: int  # 0: no answer (refused, reset, timed out)
    ms: float
    at: float  # when it was sent (time.monotonic())
    ok: bool


@dataclass
class Client:
    port: int
    number: int
    agent_id: str
    results: list = field(default_factory=list)
    acknowledged: list = field(default_factory=list)  # tokens of edits answered with the redirect
    cookies: dict = field(default_factory=dict)
    conn: http.client.HTTPConnection | None = None

    def request(self, kind, method, path, body=None, expect=(200,)):
        headers = {"Host": HOST, "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            body = urllib.parse.urlencode(body)
            headers.update(
                {"Content-Type": "application/x-www-form-urlencoded", "Referer": f"http://{HOST}:{self.port}{path}"}
            )
        sent, start = time.monotonic(), time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            status = response.status
            for header, value in response.getheaders():
                if header.lower() == "set-cookie":
                    name, _, rest = value.partition("=")
                    self.cookies[name] = rest.split(";")[0]
            if response.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn, status, text = None, 0, ""
        elapsed = (time.perf_counter() - start) * 1000
        self.results.append(Result(kind, status, elapsed, sent, status in expect))
        return status, text

    def sign_in(self) -> bool:
        status, page = self.request("login form", "GET", "/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if not token:
            return False
        status, _ = self.request(
            "sign in",
            "POST",
            "/admin/login/?next=/admin/",
            expect=(302,),
            body={
                "csrfmiddlewaretoken": token.group(1),
                "username": "bench@serve.test",
                "password": PASSWORD,
                "next": "/admin/",
            },
        )
        return status == 302

    def edit(self, seq: int):
        path = f"/admin/agents/agent/{self.agent_id}/change/"
        status, page = self.request("edit form", "GET", path)
        if status != 200:
            return
        form = FormFields()
        form.feed(page)
        token = f"bench-write-{self.number}-{seq}-{secrets.token_hex(4)}"
        fields = [(k, token if k == "goal" else v) for k, v in form.fields if k != "_continue"]
        fields.append(("_save", "Save"))
        status, _ = self.request("edit save", "POST", path, body=fields, expect=(302,))
        if status == 302:
            self.acknowledged.append(token)

    def run(self, rounds: int, deadline: float, stop: threading.Event | None = None, think: float = 0):
        signed_in = False
        for seq in range(rounds):
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                break
            if not signed_in:
                signed_in = self.sign_in()
                if not signed_in:
                    time.sleep(0.2)
                    continue
            for page in PAGES:
                self.request(page, "GET", page)
                time.sleep(think)
            self.edit(seq)
        if self.conn is not None:
            self.conn.close()


# --- servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, command: list[str], env: dict, log: Path):
        self.name, self.command, self.env, self.log_path = name, command, env, log

    def __enter__(self):
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        port = int(self.env["BIND"].rsplit(":", 1)[1])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited at start:\n{self.log_path.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=5)
                conn.request("GET", "/health/")
                if conn.getresponse().status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.name} did not answer /health/ in 60 s")

    def __exit__(self, *exc):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()

    def pool_stats(self) -> dict | None:
        counters = [
            dict(re.findall(r"(\w+)=(\d+)", line))
            for line in self.log_path.read_text().splitlines()
            if "pool stats pid=" in line
        ]
        if not counters:
            return None
        return {
            key: sum(int(c.get(key, 0)) for c in counters)
            for key in ("requests", "waited", "wait_ms", "timeouts", "lost")
        }


def servers(args, base: Path, quick: bool):
    """(name, command, extra environment) of each contender."""
    py = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
    # One process: its pool gets the connections of all of gunicorn's workers together.
    total = args.workers * (2 + args.threads)
    yield (
        "runserver",
        lambda port: [py, "manage.py", "runserver", "--noreload", f"{HOST}:{port}"],
        {"DB_MAX_OVERFLOW": str(total - 2)},
    )
    yield (
        "gunicorn WSGI",
        lambda port: ["scripts/serve"],
        {"WEB_CONCURRENCY": str(args.workers), "WEB_THREADS": str(args.threads), "DB_MAX_OVERFLOW": str(args.threads)},
    )
    if not quick:
        yield (
            "uvicorn ASGI",
            lambda port: [
                py,
                "-m",
                "uvicorn",
                "agentforge_site.asgi:application",
                "--host",
                HOST,
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--no-access-log",
            ],
            {"DB_MAX_OVERFLOW": str(args.threads)},
        )


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def describe_failures(failed: Counter) -> str:
    """Failed requests as "kind status xN, ..." (status 0: no answer), or "none"."""
    return ", ".join(f"{kind} {status} x{n}" for (kind, status), n in sorted(failed.items())) or "none"


def load_run(port: int, agents: list[str], clients: int, rounds: int, seconds: float) -> dict:
    crowd = [Client(port, i, agents[i % len(agents)]) for i in range(clients)]
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=c.run, args=(rounds, deadline)) for c in crowd]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    wall = time.monotonic() - started
    results = [r for c in crowd for r in c.results]
    latencies = [r.ms for r in results if r.ok]
    return {
        "requests": len(results),
        # Answered as expected, per second: a fast 503 is not throughput.
        "rps": len(latencies) / wall,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "errors": sum(not r.ok for r in results),
        "failed": Counter((r.kind, r.status) for r in results if not r.ok),
        "edits": sum(len(c.acknowledged) for c in crowd),
        "by_kind": {
            kind: (len(ms), percentile(ms, 50), percentile(ms, 99))
            for kind in sorted({r.kind for r in results})
            for ms in [[r.ms for r in results if r.kind == kind and r.ok]]
        },
    }


# --- the outage ------------------------------------------------------------------------------------


def outage_run(args, cluster: Cluster, env: dict, base: Path, agents: list[str]) -> dict:
    port = free_port()
    env = {
        **env,
        "BIND": f"{HOST}:{port}",
        "WEB_CONCURRENCY": str(args.workers),
        "WEB_THREADS": str(args.threads),
        "DB_MAX_OVERFLOW": str(args.threads),
    }
    health: list[tuple[float, int, float]] = []
    stop = threading.Event()

    def ask_health():
        sent, start = time.monotonic(), time.perf_counter()
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
            conn.request("GET", "/health/")
            status = conn.getresponse().status
            conn.close()
        except OSError:
            status = 0
        health.append((sent, status, (time.perf_counter() - start) * 1000))

    def poll():
        # A load balancer's probe every 0.1 s, each on its own connection, none waiting for the last.
        askers = []
        while not stop.is_set():
            askers.append(threading.Thread(target=ask_health))
            askers[-1].start()
            time.sleep(0.1)
        for asker in askers:
            asker.join(15)

    crowd = [Client(port, 100 + i, agents[i % len(agents)]) for i in range(8)]
    with Server("gunicorn WSGI", ["scripts/serve"], env, base / "outage.log") as server:
        poller = threading.Thread(target=poll)
        poller.start()
        deadline = time.monotonic() + 5 + args.outage + 30
        # Clients that pause 0.1 s between pages, as people do: the run is about behaviour, not throughput.
        threads = [threading.Thread(target=c.run, args=(10_000, deadline, stop, 0.1)) for c in crowd]
        for t in threads:
            t.start()
        time.sleep(5)
        stopped_at = time.monotonic()
        cluster.stop("immediate")
        down_at = time.monotonic()  # pg_ctl -w returns once the server is gone
        time.sleep(args.outage)
        restarting_at = time.monotonic()
        cluster.start()
        restarted_at = time.monotonic()  # pg_ctl -w returns once it accepts connections
        time.sleep(15)  # the clients carry on: recovery must come by itself
        stop.set()
        for t in threads + [poller]:
            t.join(60)
        worker_timeouts = server.log_path.read_text().count("WORKER TIMEOUT")
    # Every edit answered with the redirect must be in the audit trail (same transaction).
    acknowledged = [token for c in crowd for token in c.acknowledged]
    stored = cluster.psql(
        "SELECT string_agg(changes::text, ' ') FROM audit_logs WHERE object_pk IN ({})".format(
            ",".join(f"'{a}'" for a in agents)
        )
    )
    lost = [token for token in acknowledged if token not in stored]
    results = [r for c in crowd for r in c.results]
    during = [r for r in results if down_at <= r.at <= restarting_at]
    failed = [r for r in results if not r.ok]
    failed_during = [r.ms for r in during if not r.ok]
    # The first /health/ asked after the stop, and the first answered 503 (when it was asked, how fast).
    health.sort()
    first_after = next(((status, ms) for t, status, ms in health if t >= down_at), (None, None))
    first_503 = next(((t, ms) for t, status, ms in health if t >= down_at and status == 503), None)
    outage_health = [(status, ms) for t, status, ms in health if down_at <= t <= restarting_at]
    back = next((t for t, status, _ in health if t >= restarted_at and status == 200), None)
    after_back = [r for r in results if back is not None and r.at > back + 2]
    return {
        "health_first": first_after,
        "health_503_after_s": None if first_503 is None else first_503[0] + first_503[1] / 1000 - down_at,
        "stop_took_s": down_at - stopped_at,
        "health_during": (
            len(outage_health),
            sum(s == 503 for s, _ in outage_health),
            max((ms for _, ms in outage_health), default=0),
        ),
        "requests_during": len(during),
        "status_counts": {s: sum(r.status == s for r in failed) for s in sorted({r.status for r in failed})},
        "failed": Counter((r.kind, r.status) for r in failed),
        "slowest_failure_ms": max((r.ms for r in failed), default=0),
        "failure_p50_ms": percentile(failed_during, 50),
        "failure_p99_ms": percentile(failed_during, 99),
        "failed_during": len(failed_during),
        "recovered_after_s": None if back is None else back - restarted_at,
        "errors_after_recovery": sum(not r.ok for r in after_back),
        "requests_after_recovery": len(after_back),
        "worker_timeouts": worker_timeouts,
        "acknowledged": len(acknowledged),
        "lost": len(lost),
    }


def main():
    args = parse_args()
    if not (PG_BIN / "initdb").exists():
        raise SystemExit(f"needs PostgreSQL 15's server binaries in {PG_BIN} (Debian package postgresql-15)")
    with socket.socket() as s:
        if s.connect_ex((HOST, PG_PORT)) == 0:
            raise SystemExit(f"port {PG_PORT} is in use; the benchmark starts its own cluster there")
    base = Path(tempfile.mkdtemp(prefix="af-serve-bench-"))
    base.chmod(0o755)
    cluster = Cluster(base)
    try:
        cluster.init()
        cluster.psql("CREATE DATABASE agentforge_bench", db="postgres")
        env = app_env(base)
        py = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
        subprocess.run([py, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
        populate = POPULATE.format(password=PASSWORD, agents=max(args.clients + [8]))
        out = subprocess.run(
            [py, "manage.py", "shell", "-v", "0", "-c", populate],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        agents = out.split()
        # Every contender serves the same hashed static names (runserver too, DEBUG being off).
        subprocess.run(
            [py, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=ROOT, env=env, check=True
        )
        print(f"PostgreSQL 15 cluster on {HOST}:{PG_PORT} ({base}); {len(agents)} agents, 61 users, 300+ audit entries")
        print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
        print(
            f"gunicorn: {args.workers} workers x {args.threads} threads; uvicorn: {args.workers} workers; "
            f"pool per worker: min 2, max 2+{args.threads}, wait 1 s (runserver, one process: max "
            f"{args.workers * (2 + args.threads)}); {args.rounds} rounds per client "
            f"(4 pages + 1 edit each), cap {args.seconds:.0f} s"
        )
        print(
            f"{'server':<15}{'clients':>8}{'requests':>10}{'ok/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
            f"{'edits':>7}  pool waits"
        )
        for clients in args.clients:
            for name, command, extra in servers(args, base, args.quick):
                port = free_port()
                server_env = {**env, **extra, "BIND": f"{HOST}:{port}"}
                log = base / f"{name.split()[0]}-{clients}.log"
                with Server(name, command(port), server_env, log) as server:
                    figures = load_run(port, agents, clients, args.rounds, args.seconds)
                stats = server.pool_stats()
                waits = (
                    f"{stats['waited']} of {stats['requests']} checkouts waited, {stats['wait_ms']} ms in all, "
                    f"{stats['timeouts']} timeouts"
                    if stats
                    else "-"
                )
                print(
                    f"{name:<15}{clients:>8}{figures['requests']:>10}{figures['rps']:>8.1f}{figures['p50']:>9.0f}"
                    f"{figures['p99']:>9.0f}{figures['errors']:>8}{figures['edits']:>7}  {waits}",
                    flush=True,
                )
                if figures["failed"]:
                    print(f"    failed: {describe_failures(figures['failed'])}")
                if args.by_page:
                    for kind, (n, p50, p99) in figures["by_kind"].items():
                        print(f"    {kind:<28}{n:>6} ok   p50 {p50:>7.0f} ms   p99 {p99:>7.0f} ms")
        if not args.no_outage:
            o = outage_run(args, cluster, env, base, agents)
            print(f"\noutage: PostgreSQL stopped (immediate) for {args.outage:.0f} s under 8 clients, gunicorn WSGI")
            n, n503, slowest = o["health_during"]
            print(
                f"  /health/: first asked after the stop answered {o['health_first'][0]} in {o['health_first'][1]:.0f} ms; "
                f"first 503 answered {o['health_503_after_s']:.2f} s after the server was gone "
                f"(pg_ctl stop took {o['stop_took_s']:.2f} s); until the restart {n503} of {n} answers 503, "
                f"slowest {slowest:.0f} ms"
                if o["health_503_after_s"] is not None
                else "  /health/ never said 503"
            )
            print(
                f"  client requests sent while the server was down: {o['requests_during']}, {o['failed_during']} failed, "
                f"in p50 {o['failure_p50_ms']:.0f} ms / p99 {o['failure_p99_ms']:.0f} ms"
            )
            print(f"  failed requests by kind and status: {describe_failures(o['failed'])}")
            print(
                f"  all failed requests by status: {o['status_counts']} (0 = no answer); slowest "
                f"{o['slowest_failure_ms']:.0f} ms (a request in flight when the server went away)"
            )
            print(
                f"  back: /health/ 200 {o['recovered_after_s']:.2f} s after PostgreSQL restarted; "
                f"{o['errors_after_recovery']} errors in {o['requests_after_recovery']} requests after that"
                if o["recovered_after_s"] is not None
                else "  never recovered"
            )
            print(
                f"  worker timeouts: {o['worker_timeouts']}; acknowledged edits: {o['acknowledged']}, "
                f"found in the audit trail: {o['acknowledged'] - o['lost']}, lost: {o['lost']}"
            )
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        cluster.stop()
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
