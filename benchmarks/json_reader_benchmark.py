"""Reading a big legacy file record by record: ``legacy.format.jsonio.read_records`` against ijson.

    .venv/bin/python benchmarks/json_reader_benchmark.py [--records 200000]

Writes ``--records`` audit-log entries like AgentForge's (indent 2, about 700 bytes each)
and a 400 KB file nesting a list 200,000 levels deep to a temporary directory, then reads
each file in a child process per contender and prints records/s (wall clock, and per CPU
second, which a busy machine disturbs less) and peak RSS:

  read_records   what import_json uses: the standard library's C decoder, one record at a
                 time, with the duplicate-key, depth and value checks (docs/import.md#limits)
  ijson items    ijson's yajl2_c backend, what the importer used before (if installed)
  json.load      the whole file in memory at once, no checks

The deep file is read with a 2 GiB address-space limit per child, so a contender whose
memory grows with depth fails with MemoryError instead of taking the machine down.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))


def write_audit(path: Path, n: int) -> None:
    entries = [
        {
            "id": str(uuid.UUID(int=i + 1)),
            "org_id": "org_default",
            "user_id": str(uuid.UUID(int=10**9 + i % 50)),
            "user_email": "admin@agentforge.to",
            "user_name": "Ahmed Admin",
            "session_id": str(uuid.UUID(int=i)),
            "action": "login",
            "resource_type": "user",
            "resource_id": None,
            "resource_name": None,
            "details": {"remember_me": True, "attempt": i % 3},
            "changes": None,
            "ip_address": "127.0.0.1",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "request_id": None,
            "request_path": "/api/login",
            "request_method": "POST",
            "success": True,
            "error_message": None,
            "timestamp": "2026-01-05T09:06:54.614856",
        }
        for i in range(n)
    ]
    path.write_text(json.dumps(entries, indent=2), encoding="utf-8")


def contender(name: str, path: Path) -> int:
    if name == "read_records":
        from legacy.format.jsonio import read_records

        return sum(1 for _ in read_records(path, path.name, "list", stream=True))
    if name == "ijson items":
        import ijson

        with open(path, "rb") as fh:
            return sum(1 for _ in ijson.items(fh, "item", use_float=True))
    with open(path, encoding="utf-8") as fh:
        return len(json.load(fh))


def run(name: str, path: Path, limit: int | None = None) -> tuple[str, float, float, int]:
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if limit:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            count = contender(name, path)
            os.write(1, b"")
            code = 0 if count else 3
        except ImportError:
            code = 4
        except MemoryError:
            code = 5
        except Exception:  # a refusal (LegacyDataError) or a parse error: what we want on the deep file
            code = 6
        os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - started
    outcome = {0: "ok", 3: "no records", 4: "not installed", 5: "MemoryError", 6: "refused"}.get(
        os.waitstatus_to_exitcode(status), f"killed ({status})"
    )
    return outcome, elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    with tempfile.TemporaryDirectory() as tmp:
        audit = Path(tmp) / "audit_logs.json"
        write_audit(audit, args.records)
        deep = Path(tmp) / "deep.json"
        deep.write_text("[" * 200_000 + "]" * 200_000)
        size = audit.stat().st_size / 2**20
        print(f"{args.records:,} audit entries, {size:.0f} MiB; deep file 400 KB, 200,000 levels")
        print(
            f"{'contender':<14} {'records/s':>10} {'per CPU s':>10} {'peak RSS':>9}   {'deep file (2 GiB limit)':<28} {'peak RSS':>9}"
        )
        for name in ("read_records", "ijson items", "json.load"):
            outcome, elapsed, cpu, rss = run(name, audit)
            rate = f"{args.records / elapsed:,.0f}" if outcome == "ok" else outcome
            per_cpu = f"{args.records / cpu:,.0f}" if outcome == "ok" else ""
            deep_outcome, deep_elapsed, _cpu, deep_rss = run(name, deep, limit=2 << 30)
            deep_text = f"{deep_outcome} in {deep_elapsed:.2f} s"
            print(f"{name:<14} {rate:>10} {per_cpu:>10} {rss:>5} MiB   {deep_text:<28} {deep_rss:>5} MiB")


if __name__ == "__main__":
    main()
