"""save() latency of the parallel-run store in each STORAGE_MODE, against the JSON-only baseline.

    .venv/bin/python benchmarks/store_benchmark.py [--records 1000] [--saves 300]
    DB_TYPE=postgresql DB_HOST=127.0.0.1 DB_USER=postgres DB_NAME=af_store .venv/bin/python benchmarks/store_benchmark.py

Uses the configured backend (DB_* variables) with a scratch test database (created and
dropped here, like the test runner; SQLite uses a temporary file). The data set is
``--records`` realistic agents (about 2.4 KB of legacy JSON each: personality,
guardrails, tasks, memory) in ``agents.json`` and in the database (import_json), and
each timed save() updates one random existing agent, as the agent editor does.

Rows printed:
  legacy app   the JSON-era AppState: dict in memory, json.dump of the whole file, no lock,
               no fsync (the old application; not safe with several processes)
  json         STORAGE_MODE=json: locked read-modify-write, temp file + fsync + rename
  dual         STORAGE_MODE=dual: database transaction; the JSON file follows within
               DUAL_WRITE_DELAY (0.25 s), one rewrite for all the saves of that time
               ("json lag" is how far the file trailed the database, worst batch)
  dual, each   DUAL_WRITE_DELAY=0: the JSON file rewritten after every commit (before)
  database     STORAGE_MODE=database: the database only, through the mappers
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))


def make_agent(i: int, rng: random.Random) -> dict:
    agent_id = "%08x-%04x-4%03x-8%03x-%012x" % (rng.getrandbits(32), rng.getrandbits(16), i % 4096, i % 4096, i)
    return {
        "id": agent_id,
        "name": f"Support agent {i}",
        "icon": "\U0001f916",
        "goal": "Answer customer questions about orders, refunds and shipping; escalate anything unusual. " * 2,
        "agent_type": "conversational",
        "personality": {
            "tone": "professional",
            "voice": "balanced",
            "languages": ["English", "Arabic"],
            "traits": ["patient", "precise"],
            "creativity": 5,
            "length": 5,
            "formality": 7,
            "empathy": 6,
            "proactivity": 5,
            "confidence": 7,
        },
        "guardrails": {
            "anti_hallucination": True,
            "cite_sources": True,
            "admit_uncertainty": True,
            "verify_facts": True,
            "no_speculation": False,
            "avoid_topics": ["politics"],
            "focus_topics": ["orders", "refunds"],
            "max_length": "medium",
            "language": "user",
            "escalate_angry": True,
            "escalate_complex": True,
            "escalate_request": True,
            "escalate_sensitive": False,
            "pii_protection": True,
            "mask_pii": True,
            "no_store_pii": True,
        },
        "tasks": [
            {
                "id": f"task-{t}",
                "name": f"Task {t}",
                "description": "Handle one kind of request",
                "instructions": [
                    {"id": f"i-{t}-{n}", "text": f"Step {n}: check the order status first"} for n in range(3)
                ],
            }
            for t in range(3)
        ],
        "tool_ids": [],
        "model_id": "gpt-4o",
        "created_at": "2026-01-20T10:00:00.123456",
        "updated_at": "2026-01-20T10:00:00.123456",
        "status": "published",
        "is_active": True,
        "memory": [
            {
                "timestamp": "2026-01-21T09:00:00.000001",
                "summary": "Customer asked about a refund " * 3,
                "conversation_id": "c0ffee00-0000-4000-8000-%012x" % m,
            }
            for m in range(3)
        ],
        "memory_enabled": True,
        "owner_id": None,
        "created_by": None,
        "process_definition": None,
        "process_settings": None,
    }


def summarise(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    median = statistics.median(ordered) * 1000
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))] * 1000
    return median, p95, len(samples) / sum(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1000, help="agents in the file and the database (default 1000)")
    parser.add_argument("--saves", type=int, default=300, help="timed saves per mode (default 300)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="af-store-bench-"))
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("SQLITE_TEST_PATH", str(work / "bench.sqlite3"))
    import agentforge_site

    agentforge_site.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from legacy.store import get_store, write_behind

    rng = random.Random(args.seed)
    records = [make_agent(i, rng) for i in range(args.records)]
    ids = [r["id"] for r in records]
    plan = [rng.randrange(len(records)) for _ in range(args.saves)]

    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        seed_dir = work / "seed"
        seed_dir.mkdir()
        (seed_dir / "agents.json").write_text(json.dumps({r["id"]: r for r in records}, ensure_ascii=True, indent=2))
        size_kb = (seed_dir / "agents.json").stat().st_size / 1024
        from accounts.models import Organization

        Organization.get_default()  # agents belong to org_default (no security/ files here)
        call_command("import_json", str(seed_dir), verbosity=0)

        def fresh_dir(mode: str) -> Path:
            target = work / mode
            shutil.copytree(seed_dir, target)
            return target

        def updated(index: int, n: int) -> dict:
            record = dict(records[index])
            record["name"] = f"Support agent {index} (edit {n})"
            record["updated_at"] = "2026-02-01T12:00:%02d.%06d" % (n % 60, n + 1)
            return record

        results = {}

        # The JSON-era application: state in memory, whole file dumped on every save.
        legacy_dir = fresh_dir("legacy")
        state = json.loads((legacy_dir / "agents.json").read_text())
        samples = []
        for n, index in enumerate(plan):
            record = updated(index, n)
            start = time.perf_counter()
            state[record["id"]] = record
            with open(legacy_dir / "agents.json", "w") as fh:
                json.dump(state, fh, indent=2)
            samples.append(time.perf_counter() - start)
        results["legacy app"] = summarise(samples)

        lags = {}
        for label, mode, delay in (
            ("json", "json", 0),
            ("dual", "dual", 0.25),
            ("dual, each", "dual", 0),
            ("database", "database", 0),
        ):
            settings.DUAL_WRITE_DELAY = delay
            store = get_store(mode, data_dir=fresh_dir(label.replace(", ", "-")))
            for n in range(5):  # warm-up (connections, caches)
                store.save("agents", updated(plan[n], n))
            if mode == "dual":
                store.flush()
                queue = write_behind.queue_for(store.data_dir, store.sync_many, delay)
                queue.lags.clear()
            samples = []
            for n, index in enumerate(plan):
                record = updated(index, n + 100_000)
                start = time.perf_counter()
                store.save("agents", record)
                samples.append(time.perf_counter() - start)
            results[label] = summarise(samples)
            if mode == "dual":
                store.flush()
            if delay:
                lags[label] = max(queue.lags)
            check = store.get("agents", ids[plan[-1]])
            assert check["name"].endswith(f"(edit {len(plan) - 1 + 100_000})"), check["name"]
            if mode != "database":
                on_disk = json.loads((store.data_dir / "agents.json").read_text())
                assert on_disk[ids[plan[-1]]]["name"] == check["name"], "the JSON file missed the last save"

        print(
            f"backend: {settings.DB_TYPE} ({connection.vendor}), {args.records} agents "
            f"({size_kb:.0f} KiB agents.json), {args.saves} saves per mode, python {sys.version.split()[0]}"
        )
        print(f"{'mode':<12} {'median ms':>10} {'p95 ms':>10} {'ops/s':>10} {'vs json':>9} {'json lag s':>11}")
        base = results["json"][0]
        for mode, (median, p95, ops) in results.items():
            lag = f"{lags[mode]:>11.2f}" if mode in lags else f"{'':>11}"
            print(f"{mode:<12} {median:>10.2f} {p95:>10.2f} {ops:>10.0f} {median / base:>8.2f}x {lag}")
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
