#!/usr/bin/env python
"""What did the redundant indexes cost each write? The three busiest tables with today's
indexes and with the ones dropped in wave 2 (``*_redundant_indexes_dropped``,
``operations`` 0004), filled with the same rows in the same run (PostgreSQL).

For ``messages``, ``conversations`` and ``audit_logs`` it makes two temporary copies with the
table's current indexes (``LIKE … INCLUDING DEFAULTS INCLUDING INDEXES``); the "before" copy
also gets what the migrations dropped: the ``varchar_pattern_ops`` copy of ``legacy_id`` and,
for ``conversations``, the single-column ``org_id`` index. Each round inserts N generated rows
(``INSERT … SELECT generate_series``) into each copy in turn, alternating which goes first,
and prints the median wall time and the server process's CPU per row (from ``/proc``: the
server must run on this machine). Nothing is written to the real tables.

    DB_TYPE=postgresql DB_HOST=127.0.0.1 DB_USER=postgres DB_NAME=af_bench \\
        .venv/bin/python benchmarks/index_benchmark.py --rows 200000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentforge_site.settings")

LEGACY_ID_PATTERN = "CREATE INDEX ON {table} (legacy_id varchar_pattern_ops)"
DROPPED = {
    "messages": [LEGACY_ID_PATTERN],
    "conversations": [LEGACY_ID_PATTERN, "CREATE INDEX ON {table} (org_id)"],
    "audit_logs": [LEGACY_ID_PATTERN],
}
# One row per g of generate_series(1, N), AgentForge-shaped: UUID legacy ids, three organizations.
ROWS = {
    "messages": """SELECT gen_random_uuid(), gen_random_uuid()::text, '{{}}', 'user', repeat('x', 200), '[]', '[]',
        g %% 50, now() + g * interval '1 ms', gen_random_uuid(), (ARRAY[%s, %s, %s]::uuid[])[g %% 3 + 1]
        FROM generate_series(1, {rows}) g""",
    "conversations": """SELECT gen_random_uuid(), gen_random_uuid()::text, '{{}}', now(), now() + g * interval '1 ms',
        'Chat ' || g, NULL, gen_random_uuid(), (ARRAY[%s, %s, %s]::uuid[])[g %% 3 + 1], gen_random_uuid()
        FROM generate_series(1, {rows}) g""",
    "audit_logs": """SELECT g, NULL, NULL, 1, '', NULL, NULL, '10.0.0.1', NULL, '{{"n": 1}}', 'user@example.com', '',
        '', now() + g * interval '1 ms', gen_random_uuid()::text, NULL, 'login', 'user', NULL, NULL, 'User',
        'Mozilla/5.0', NULL, NULL, NULL, NULL, true, NULL, '', repeat('0', 64), gen_random_uuid(), NULL,
        (ARRAY[%s, %s, %s]::uuid[])[g %% 3 + 1]
        FROM generate_series(1, {rows}) g""",
}


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="rows per table per round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    import logging
    import uuid

    import django

    django.setup()
    from django.db import connection

    logging.getLogger("agentforge.slow_query").setLevel(logging.ERROR)  # every fill is a "slow query"

    if connection.vendor != "postgresql":
        raise SystemExit("index_benchmark: PostgreSQL only (the pattern_ops copies were PostgreSQL's)")
    orgs = [str(uuid.uuid4()) for _ in range(3)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
        if not Path(f"/proc/{pid}/stat").exists():
            raise SystemExit("index_benchmark: the server must run on this machine (its CPU is read from /proc)")
        print(f"{args.rows:,} rows per table and round, {args.rounds} rounds, medians")
        print(f"{'table':14} {'indexes now':>26} {'with the dropped ones':>28}  saved")
        for table, dropped in DROPPED.items():
            variants = {"now": f"bench_{table}_now", "before": f"bench_{table}_before"}
            for name in variants.values():
                cursor.execute(f"CREATE TEMP TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING INDEXES)")
            for statement in dropped:
                cursor.execute(statement.format(table=variants["before"]))
            results = {variant: [] for variant in variants}
            for round_ in range(args.rounds):
                order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
                for variant in order:
                    name = variants[variant]
                    cursor.execute(f"TRUNCATE {name}")
                    started, cpu = time.perf_counter(), backend_cpu(pid)
                    cursor.execute(f"INSERT INTO {name} " + ROWS[table].format(rows=args.rows), orgs)
                    results[variant].append((time.perf_counter() - started, backend_cpu(pid) - cpu))
            line = []
            for variant in variants:
                wall = statistics.median(r[0] for r in results[variant])
                cpu = statistics.median(r[1] for r in results[variant])
                line.append((wall, cpu))
                count = len(connection.introspection.get_constraints(cursor, variants[variant]))
                line[-1] += (count,)
            (now_wall, now_cpu, now_n), (old_wall, old_cpu, old_n) = line
            print(
                f"{table:14} {now_n:2} idx {now_wall:5.2f} s {now_cpu / args.rows * 1e6:5.1f} us/row"
                f"   {old_n:2} idx {old_wall:5.2f} s {old_cpu / args.rows * 1e6:5.1f} us/row"
                + (f"  {1 - now_cpu / old_cpu:5.0%} CPU" if old_cpu else "  (too short to measure)")
            )
            for name in variants.values():
                cursor.execute(f"DROP TABLE {name}")


if __name__ == "__main__":
    main()
