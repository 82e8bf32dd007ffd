#!/usr/bin/env python
"""Read throughput with the primary alone and with primary + streaming replica, in one run.

Needs scripts/start-replica (a primary on REPLICA_PRIMARY_PORT 5433 and its streaming replica
on REPLICA_PORT 5434). Creates a scratch database on that primary (DB_NAME, default
af_replica_bench; --keep reuses it), fills it (organizations, agents, conversations, messages,
audit log), waits until the replica has it, then for each mode starts --workers processes
that run each workload for --seconds:

* newest messages: the 50 newest messages of a random conversation (AgentForge's chat view);
* agent list: an organization's published agents by name (AgentForge's agent picker);
* admin audit log / admin agents: the admin changelists as a superuser, through Django's
  test client (session, user, permissions, page, estimated count).

Mode "primary alone" has no replica configured; mode "primary + replica" has
DB_REPLICA_HOSTS set, so the router sends these reads to the replica. Meanwhile one process
writes --write-rate messages a second to the primary, so the replica has WAL to replay; the
replica's lag (ReplicaMonitor: replay position and time, as the router sees it) is sampled
four times a second. Transactions counted by pg_stat_database on each server show where the
reads went.

    scripts/start-replica && .venv/bin/python benchmarks/replica_benchmark.py --seconds 8 --workers 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
PRIMARY_PORT = os.environ.get("REPLICA_PRIMARY_PORT", "5433")
REPLICA_PORT = os.environ.get("REPLICA_PORT", "5434")
os.environ.update(
    DB_TYPE="postgresql",
    DB_HOST="127.0.0.1",
    DB_PORT=PRIMARY_PORT,
    DB_USER="postgres",
    DB_PASSWORD="",
    DB_POOL_SIZE="1",
    DB_MAX_OVERFLOW="2",
    DJANGO_SETTINGS_MODULE="tests.settings",
    DJANGO_ALLOW_ASYNC_UNSAFE="true",
    DB_REPLICA_CHECK_INTERVAL="1",
)
os.environ.setdefault("DB_NAME", "af_replica_bench")
REPLICA_HOSTS = f"127.0.0.1:{REPLICA_PORT}"

WORKLOADS = ("newest messages", "agent list", "admin audit log", "admin agents")
MODES = ("primary alone", "primary + replica")
AGENTS_PER_ORG = 100
CONVERSATIONS_PER_ORG = 50


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="per workload and mode (8)")
    parser.add_argument("--workers", type=int, default=4, help="reading processes (4)")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--audit", type=int, default=200_000, help="audit log rows (200,000)")
    parser.add_argument("--write-rate", type=float, default=20.0, help="messages written per second meanwhile (20)")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the scratch database")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    return parser.parse_args()


def _setup(replica: bool):
    os.environ.pop("DB_REPLICA_HOSTS", None)  # a spawned process inherits the parent's
    if replica:
        os.environ["DB_REPLICA_HOSTS"] = REPLICA_HOSTS
    import logging

    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # "testserver" host for the test client
    logging.getLogger("agentforge").setLevel(logging.ERROR)


def _raw(port: str, sql: str, dbname: str):
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=dbname, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchone() if cursor.description else None


def prepare(args) -> dict:
    """Create and fill the scratch database on the primary; wait for the replica to have it."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    name = settings.DATABASES["default"]["NAME"]
    exists = _raw(PRIMARY_PORT, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'", "postgres")[0]
    if exists and not args.keep:
        _raw(PRIMARY_PORT, f'DROP DATABASE "{name}" WITH (FORCE)', "postgres")
    if not exists or not args.keep:
        _raw(PRIMARY_PORT, f'CREATE DATABASE "{name}"', "postgres")
    call_command("migrate", verbosity=0)

    from admin_audit_benchmark import fill_postgresql, make_people

    from agentforge_agents.models import Agent
    from conversations.models import Conversation, Message
    from security.audit import rechain
    from security.models import AuditLog

    orgs, users, root, _ = make_people()
    if not Agent.all_orgs.exists():
        Agent.all_orgs.bulk_create(
            [
                Agent(org=org, name=f"Agent {i:03d}", status="published" if i % 3 else "draft")
                for org in orgs
                for i in range(AGENTS_PER_ORG)
            ]
        )
        Conversation.all_orgs.bulk_create(
            [
                Conversation(org=org, user=users[n * 10], title=f"Chat {i}")
                for n, org in enumerate(orgs)
                for i in range(CONVERSATIONS_PER_ORG)
            ]
        )
        chats = list(Conversation.all_orgs.values_list("pk", "org_id"))
        batch = []
        for i in range(args.messages):
            chat, org_id = chats[i % len(chats)]
            batch.append(
                Message(
                    org_id=org_id,
                    conversation_id=chat,
                    role="user" if i % 2 else "assistant",
                    content=f"message {i} " + "lorem ipsum " * 8,
                    position=i // len(chats),
                )
            )
            if len(batch) == 5000:
                Message.all_orgs.bulk_create(batch)
                batch = []
        Message.all_orgs.bulk_create(batch)
        fill_postgresql(connection, args.audit, orgs, users)
        # The entries this benchmark bulk-inserted (no hash yet) join their chains now: the
        # operator's explicit adoption, as rechain_audit_log --accept does.
        rechain(accept=AuditLog.all_orgs.filter(entry_hash="").values_list("pk", flat=True))
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    target = _raw(PRIMARY_PORT, "SELECT pg_current_wal_lsn()::text", "postgres")[0]
    while _raw(REPLICA_PORT, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn", "postgres")[0] is not True:
        time.sleep(0.2)
    return {
        "database": name,
        "orgs": [str(o.pk) for o in orgs],
        "root": str(root.pk),
        "chats": [(str(c), str(o)) for c, o in Conversation.all_orgs.values_list("pk", "org_id")],
        "rows": {
            "agents": Agent.all_orgs.count(),
            "conversations": Conversation.all_orgs.count(),
            "messages": Message.all_orgs.count(),
            "audit_logs": AuditLog.all_orgs.count(),
        },
    }


def reader(replica: bool, data: dict, start, seconds: float, ready, out) -> None:
    """One reading process: each workload in turn, in the same time windows as the others."""
    _setup(replica)
    from django.test import Client

    from accounts.models import User
    from agentforge_agents.models import Agent
    from agentforge_core.tenancy import org_scope
    from conversations.models import Message

    client = Client()
    client.force_login(User.all_orgs.get(pk=data["root"]))
    if replica:
        from agentforge_site.replicas import new_read_state

        new_read_state()  # the sign-in above pinned this process; the reads stand for other requests
    rng = random.Random(os.getpid())

    def newest_messages():
        chat, org = rng.choice(data["chats"])
        with org_scope(org):
            return len(list(Message.objects.filter(conversation_id=chat).order_by("-created_at")[:50]))

    def agent_list():
        with org_scope(rng.choice(data["orgs"])):
            return len(list(Agent.objects.filter(status="published").order_by("name")[:100]))

    def page(url):
        def get():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            return 1

        return get

    try:
        # Warm up (templates, URL resolver, connections), then wait for every process to be ready.
        for run in (newest_messages, agent_list, page("/admin/security/auditlog/"), page("/admin/agents/agent/")):
            run()
        ready.put(os.getpid())
        while not start.value:
            time.sleep(0.01)
        out.put(_read_windows(newest_messages, agent_list, page, start.value, seconds))
    except Exception as exc:  # reported by the parent, which would otherwise wait for the counts
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def _read_windows(newest_messages, agent_list, page, start_at, seconds) -> dict:
    runs = dict(
        zip(WORKLOADS, (newest_messages, agent_list, page("/admin/security/auditlog/"), page("/admin/agents/agent/")))
    )
    counts = {}
    for index, workload in enumerate(WORKLOADS):
        begin, end = start_at + index * seconds, start_at + (index + 1) * seconds
        while time.time() < begin:
            time.sleep(0.005)
        done = 0
        while time.time() < end:
            runs[workload]()
            done += 1
        counts[workload] = done
    return counts


def writer(stop_at: float, rate: float, data: dict) -> None:
    _setup(False)
    from agentforge_core.tenancy import org_scope
    from conversations.models import Message

    rng = random.Random(1)
    while time.time() < stop_at:
        chat, org = rng.choice(data["chats"])
        with org_scope(org):
            Message.objects.create(conversation_id=chat, role="user", content="written during the benchmark")
        time.sleep(1 / rate)


def _transactions(port: str, name: str) -> int:
    return int(_raw(port, f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{name}'", "postgres")[0])


def run_mode(mode: str, args, data: dict) -> dict:
    from agentforge_site.replicas import ReplicaMonitor

    ctx = multiprocessing.get_context("spawn")
    replica = mode == "primary + replica"
    out, ready, start = ctx.Queue(), ctx.Queue(), ctx.Value("d", 0.0)
    procs = [
        ctx.Process(target=reader, args=(replica, data, start, args.seconds, ready, out)) for _ in range(args.workers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)
    start_at = time.time() + 0.5
    stop_at = start_at + len(WORKLOADS) * args.seconds
    procs.append(ctx.Process(target=writer, args=(stop_at, args.write_rate, data)))
    procs[-1].start()
    start.value = start_at
    while time.time() < start_at:
        time.sleep(0.05)
    before = {port: _transactions(port, data["database"]) for port in (PRIMARY_PORT, REPLICA_PORT)}
    # The same measurement the router makes; the settings of this process have the replica configured.
    monitor = ReplicaMonitor()
    lags = []
    while time.time() < stop_at:
        (status,) = monitor.statuses(refresh=True)
        lags.append(status.lag_s if status.lag_s is not None else float("nan"))
        time.sleep(0.25)
    after = {port: _transactions(port, data["database"]) for port in (PRIMARY_PORT, REPLICA_PORT)}
    totals = {w: 0 for w in WORKLOADS}
    for _ in range(args.workers):
        counts = out.get(timeout=120)
        if "error" in counts:
            raise SystemExit(f"replica_benchmark: a reader failed in mode {mode!r}: {counts['error']}")
        for workload, n in counts.items():
            totals[workload] += n
    for p in procs:
        p.join(timeout=60)
    monitor.reset()
    return {
        "mode": mode,
        "per_second": {w: round(n / args.seconds, 1) for w, n in totals.items()},
        "transactions_primary": after[PRIMARY_PORT] - before[PRIMARY_PORT],
        "transactions_replica": after[REPLICA_PORT] - before[REPLICA_PORT],
        "lag_median_s": round(statistics.median(lags), 3),
        "lag_max_s": round(max(lags), 3),
    }


def main():
    args = parse_args()
    _setup(True)
    data = prepare(args)
    load_before = os.getloadavg()[0]
    results = [run_mode(mode, args, data) for mode in MODES]
    load_after = os.getloadavg()[0]
    cpu = os.cpu_count()
    if not args.keep:
        from django.db import connections

        connections.close_all()
        _raw(PRIMARY_PORT, f'DROP DATABASE "{data["database"]}" WITH (FORCE)', "postgres")
    if args.json:
        print(
            json.dumps(
                {
                    "rows": data["rows"],
                    "workers": args.workers,
                    "seconds": args.seconds,
                    "write_rate": args.write_rate,
                    "cpus": cpu,
                    "load": [load_before, load_after],
                    "results": results,
                }
            )
        )
        return
    rows = ", ".join(f"{n:,} {t}" for t, n in data["rows"].items())
    print(
        f"{rows}; {args.workers} reading processes, {args.seconds:g} s per workload, "
        f"{args.write_rate:g} messages/s written meanwhile; {cpu} CPUs shared by both servers "
        f"(load average {load_before:.1f} before, {load_after:.1f} after)"
    )
    print(f"{'reads per second':24}" + "".join(f"{m:>20}" for m in MODES))
    for workload in WORKLOADS:
        print(f"{workload:24}" + "".join(f"{r['per_second'][workload]:>20,.1f}" for r in results))
    for key, label in (
        ("transactions_primary", "transactions on primary"),
        ("transactions_replica", "transactions on replica"),
    ):
        print(f"{label:24}" + "".join(f"{r[key]:>20,}" for r in results))
    lags = [f"{r['lag_median_s']:g} / {r['lag_max_s']:g} s" for r in results]
    print(f"{'replica lag median/max':24}" + "".join(f"{lag:>20}" for lag in lags))


if __name__ == "__main__":
    main()
