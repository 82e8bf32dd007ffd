"""Import benchmark: ``import_json`` against Django's ``loaddata`` of the same rows.

    DEBUG=1 DB_TYPE=postgresql DB_HOST=127.0.0.1 DB_USER=postgres DB_NAME=af_import \\
        .venv/bin/python benchmarks/import_benchmark.py --rows 100000

Generates a legacy data directory (N audit-log entries and N chat messages in N/10
conversations, plus the organization, users and agent they refer to) under
``benchmarks/out/`` (git-ignored), then on the configured database, in the same run:

1. ``flush`` + ``import_json`` (timed, in a child process);
2. ``dumpdata`` of the imported rows (not timed), ``flush`` + ``loaddata`` (timed).

Each contender runs in its own child process; its peak RSS comes from ``os.wait4``.
``--raw-floor`` also times the bare driver re-inserting the same rows.

CPU seconds are printed beside wall time: the contender's own (with the import's reader
process) plus, when the database server runs on this machine and its pid file is readable
(PostgreSQL's ``data_directory`` needs a superuser or ``pg_read_all_settings``), the server's,
from ``/proc``; before each contender the server settles (no autovacuum running, a
checkpoint), so one contender's after-effects are not counted in the next. Wall time needs a free core for each of the import's two processes; CPU
time per row does not, which makes it the figure to compare between machines and runs.
THE DATABASE NAMED BY DB_NAME IS EMPTIED (flush). Use a scratch database.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USERS = 20


def generate(out: Path, rows: int) -> int:
    """Write the data directory; return the number of rows an import creates."""
    (out / "security").mkdir(parents=True, exist_ok=True)
    ts = "2026-01-10T12:00:00.123456"
    org = {
        "org_default": {
            "id": "org_default",
            "name": "Default Organization",
            "slug": "default",
            "settings": {},
            "allowed_auth_providers": ["local"],
            "require_mfa": False,
            "allowed_email_domains": [],
            "max_users": 100,
            "max_agents": 50,
            "max_tools": 100,
            "status": "active",
            "created_at": ts,
            "updated_at": ts,
        }
    }
    user_ids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(USERS)]
    users = {
        uid: {
            "id": uid,
            "org_id": "org_default",
            "email": f"user{i}@example.com",
            "password_hash": None,
            "profile": {"first_name": f"U{i}", "last_name": "Bench"},
            "role_ids": [],
            "created_at": ts,
            "updated_at": ts,
        }
        for i, uid in enumerate(user_ids)
    }
    (out / "security/organizations.json").write_text(json.dumps(org, indent=2))
    (out / "security/users.json").write_text(json.dumps(users, indent=2))
    agent_id = str(uuid.UUID(int=10**6, version=4))
    agents = {
        agent_id: {
            "id": agent_id,
            "name": "Bench agent",
            "tool_ids": [],
            "created_at": ts,
            "updated_at": ts,
            "status": "published",
        }
    }
    (out / "agents.json").write_text(json.dumps(agents, indent=2, ensure_ascii=True))
    actions = ["login", "logout", "login_failed", "create", "update"]
    with open(out / "security/audit_logs.json", "w") as fh:
        fh.write("[")
        for i in range(rows):
            entry = {
                "id": str(uuid.UUID(int=2 * 10**7 + i, version=4)),
                "org_id": "org_default",
                "user_id": user_ids[i % USERS],
                "user_email": f"user{i % USERS}@example.com",
                "user_name": f"U{i % USERS} Bench",
                "session_id": f"s{i % 977}",
                "action": actions[i % 5],
                "resource_type": "user",
                "resource_id": user_ids[(i + 1) % USERS],
                "resource_name": None,
                "details": {"remember_me": bool(i % 2), "n": i},
                "changes": None,
                "ip_address": "10.0.%d.%d" % (i % 250, i % 199),
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
                "request_id": None,
                "request_path": None,
                "request_method": None,
                "success": i % 7 != 0,
                "error_message": None,
                "timestamp": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i // 60) % 60:02d}.{i % 999999 + 1:06d}",
            }
            fh.write(("\n  " if i == 0 else ",\n  ") + json.dumps(entry))
        fh.write("\n]")
    conversations = max(1, rows // 10)
    with open(out / "conversations.json", "w") as fh:
        fh.write("{")
        written = 0
        for c in range(conversations):
            cid = str(uuid.UUID(int=3 * 10**7 + c, version=4))
            count = rows // conversations + (1 if c < rows % conversations else 0)
            messages = [
                {
                    "id": str(uuid.UUID(int=4 * 10**8 + written + m, version=4)),
                    "role": "user" if m % 2 == 0 else "assistant",
                    "content": f"message {written + m} " + "lorem ipsum dolor sit amet " * 4,
                    "timestamp": ts,
                    "tool_calls": [],
                    "sources": [] if m % 2 == 0 else [{"source": "doc.pdf", "type": "document", "relevance": 80}],
                }
                for m in range(count)
            ]
            written += count
            conv = {
                "id": cid,
                "agent_id": agent_id,
                "user_id": user_ids[c % USERS],
                "title": f"Chat {c}",
                "messages": messages,
                "created_at": ts,
                "updated_at": ts,
                "access_cache": None,
            }
            fh.write(("\n  " if c == 0 else ",\n  ") + json.dumps(cid) + ": " + json.dumps(conv, ensure_ascii=True))
        fh.write("\n}")
    # organization + users + their preferences/MFA rows, the agent, audit, conversations, messages
    return 1 + USERS * 3 + 1 + rows + conversations + rows


def manage(*args, env=None, capture=False):
    cmd = [sys.executable, str(ROOT / "manage.py"), *args]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    started = time.perf_counter()
    out, err = proc.communicate()
    elapsed = time.perf_counter() - started
    # communicate() reaped the child; its rusage is gone, so measure with wait4 ourselves.
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{err.decode(errors='replace')[-3000:]}")
    return elapsed, out


def _pss_kib(pid: int) -> int:
    """Proportional set size of one process: shared pages split between their sharers,
    so the sum over processes is their real memory (RSS would count forked pages twice)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def timed(*args, env=None, server_pid=None):
    """Run manage.py in a child; return (seconds, peak RSS in MiB of the largest process,
    peak memory in MiB of the child and its own children together, sampled every 20 ms,
    CPU seconds of the child and the children it waited for: import_json's reader process,
    CPU seconds of the database server meanwhile: see server_cpu)."""
    cmd = [sys.executable, str(ROOT / "manage.py"), *args]
    subprocess.run([sys.executable, __file__, "--settle-child"], cwd=ROOT, env=env, check=True)
    server = server_cpu(server_pid)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_total = 0
    while True:
        # import_json reads big files in a second process (legacy.migration.pipeline): count both.
        pid_done, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid_done:
            break
        peak_total = max(peak_total, _pss_kib(proc.pid) + sum(_pss_kib(c) for c in _children(proc.pid)))
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    server = server_cpu(server_pid) - server
    err = proc.stderr.read()  # small (errors only); read after wait4 to keep this child's rusage
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{err.decode(errors='replace')[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024, peak_total / 1024, usage.ru_utime + usage.ru_stime, server


def reset(env) -> None:
    """``flush``; on PostgreSQL a TRUNCATE ... CASCADE (auditlog's own table references content types)."""
    if os.environ.get("DB_TYPE") != "postgresql":
        manage("flush", "--no-input", "-v0", env=env)
        return
    code = (
        "import django; django.setup()\n"
        "from django.db import connection\n"
        "tables = connection.introspection.django_table_names(only_existing=True, include_views=False)\n"
        "tables = [t for t in tables if t != 'django_migrations']\n"
        "with connection.cursor() as c:\n"
        "    c.execute('TRUNCATE ' + ', '.join(connection.ops.quote_name(t) for t in tables) + ' RESTART IDENTITY CASCADE')\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)


def count_rows(env) -> int:
    code = (
        "import django; django.setup()\n"
        "from agentforge_core.tenancy import unscoped\n"
        "from django.apps import apps\n"
        "with unscoped():\n"
        "    print(sum(apps.get_model(m)._base_manager.count() for m in "
        "['accounts.Organization','accounts.User','settings_app.UserPreference','accounts.MFASettings',"
        "'agents.Agent','security.AuditLog','conversations.Conversation','conversations.Message']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, check=True)
    return int(out.stdout.strip())


RAW_TABLES = ("conversations", "messages", "audit_logs")  # the bulk of the rows
TICK = os.sysconf("SC_CLK_TCK")


def server_pid(env) -> int | None:
    """The database server's main process (PostgreSQL's postmaster, mariadbd) when it runs on
    this machine and this user may read its pid file; None for SQLite or a remote server."""
    code = (
        "import django; django.setup()\n"
        "from django.db import connection\n"
        "with connection.cursor() as c:\n"
        "    if connection.vendor == 'postgresql':\n"
        "        c.execute('SHOW data_directory'); print(c.fetchone()[0] + '/postmaster.pid')\n"
        "    elif connection.vendor == 'mysql':\n"
        "        c.execute('SELECT @@pid_file'); print(c.fetchone()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True)
    try:
        with open(out.stdout.decode().strip()) as fh:
            pid = int(fh.readline())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def server_cpu(pid: int | None) -> float:
    """CPU seconds the server has used so far: its processes (PostgreSQL: the postmaster and
    every child) and the children it has reaped (a finished session's backend)."""
    if pid is None:
        return 0.0
    ticks = 0
    for number, p in enumerate([pid, *_children(pid)]):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a backend that ended meanwhile: its time is in the postmaster's cutime
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        if number == 0:
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICK


def settle(cursor, vendor: str) -> None:
    """Wait until the server is quiet before a contender's window opens: the autovacuum a
    previous contender's rows set off, and its dirty pages, would be counted in the next
    one's server CPU (PostgreSQL: up to 5 s seen moving between the import and the floor)."""
    if vendor != "postgresql":
        return
    for _ in range(600):
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")
        if cursor.fetchone()[0] == 0:
            break
        time.sleep(0.1)
    cursor.execute("CHECKPOINT")  # needs a superuser or pg_checkpoint, as server_pid does


def settle_child() -> None:
    """(child) settle() on the configured database."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    with connection.cursor() as cursor:
        settle(cursor, connection.vendor)


def raw_floor_child(tables: list[str], pid: int | None) -> None:
    """(child) Re-insert the imported rows of ``tables`` with the bare driver; print the
    seconds, rows, this process's CPU seconds and the server's, for the inserts alone."""
    import io

    sys.path.insert(0, str(ROOT))  # run as a script: its own directory is on the path, not the project
    import django

    django.setup()
    from django.db import connection

    connection.ensure_connection()
    raw = connection.connection
    vendor = connection.vendor
    data, rows = {}, 0
    cur = raw.cursor()
    for t in tables:
        if vendor == "postgresql":
            buf = io.BytesIO()
            with cur.copy(f'COPY "{t}" TO STDOUT') as copy:
                for block in copy:
                    buf.write(block)
            data[t] = buf.getvalue()
            cur.execute(f'SELECT count(*) FROM "{t}"')
            rows += cur.fetchone()[0]
        else:
            cur.execute(f"SELECT * FROM {t}")
            data[t] = [tuple(r) for r in cur.fetchall()]
            rows += len(data[t])
    columns = {}
    for t in tables:
        cur.execute(f"SELECT * FROM {connection.ops.quote_name(t)} WHERE 1 = 0")
        columns[t] = [d[0] for d in cur.description]
    if vendor == "postgresql":
        cur.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")  # attachments: empty here
    else:
        if vendor == "mysql":
            cur.execute("SET FOREIGN_KEY_CHECKS = 0")
        for t in reversed(tables):
            cur.execute(f"DELETE FROM {connection.ops.quote_name(t)}")
    raw.commit()
    if vendor == "sqlite":
        cur.execute("PRAGMA cache_size = -16384")  # what import_json sets for its session
    settle(cur, vendor)
    raw.commit()
    started, cpu, server = time.perf_counter(), time.process_time(), server_cpu(pid)
    # Django's connections run in autocommit mode: one explicit transaction, as import_json has.
    cur.execute("START TRANSACTION" if vendor == "mysql" else "BEGIN")
    for t in tables:
        cols = ", ".join(connection.ops.quote_name(c) for c in columns[t])
        if vendor == "postgresql":
            with cur.copy(f'COPY "{t}" ({cols}) FROM STDIN') as copy:
                copy.write(data[t])
        else:
            marks = ", ".join(["%s" if vendor == "mysql" else "?"] * len(columns[t]))
            cur.executemany(f"INSERT INTO {connection.ops.quote_name(t)} ({cols}) VALUES ({marks})", data[t])
    cur.execute("COMMIT")
    print(time.perf_counter() - started, rows, time.process_time() - cpu, server_cpu(pid) - server)


def raw_floor(env, pid) -> tuple[float, int, float, float]:
    """Time re-inserting the imported rows of RAW_TABLES with the bare driver (no Django, no
    mapping), as the issue's raw floor: PostgreSQL COPY, MariaDB multi-row INSERT, SQLite
    executemany. Runs in a child process; returns (seconds, rows, its CPU s, the server's CPU s)."""
    cmd = [sys.executable, __file__, "--raw-floor-child", ",".join(RAW_TABLES), str(pid or 0)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True)
    if out.returncode != 0:
        raise SystemExit(f"raw floor failed:\n{out.stderr.decode(errors='replace')[-3000:]}")
    seconds, rows, cpu, server = out.stdout.split()
    return float(seconds), int(rows), float(cpu), float(server)


def describe_cpu(cpu: float, server: float, rows: int, pid) -> str:
    where = f"{cpu:.1f} here + {server:.1f} server" if pid else f"{cpu:.1f}, in process"
    return f"CPU {cpu + server:5.1f} s ({where}), {(cpu + server) / rows * 1e6:5.1f} us/row"


def print_raw_floor(env, pid, measured: list) -> float:
    """Run and print the floor, and each measured import ``(label, rows, seconds, CPU s, server
    CPU s)`` against it; return the floor's CPU seconds per row."""
    raw_seconds, raw_rows, raw_cpu, raw_server = raw_floor(env, pid)
    floor_per_row = (raw_cpu + raw_server) / raw_rows
    print(
        f"raw floor:   {raw_seconds:7.1f} s  {raw_rows / raw_seconds:9,.0f} rows/s  "
        f"{describe_cpu(raw_cpu, raw_server, raw_rows, pid)}\n"
        f"             (the {raw_rows:,} rows of {', '.join(RAW_TABLES)} re-inserted by the bare driver)"
    )
    for label, rows, seconds, cpu, server in measured:
        print(
            f"{label} / floor: {rows / seconds / (raw_rows / raw_seconds):.0%} of its rows/s, "
            f"{(cpu + server) / rows / floor_per_row:.2f}x its CPU per row"
        )
    return floor_per_row


def spread(values: list[float], scale: float = 1.0, fmt: str = ".1f") -> str:
    scaled = [v * scale for v in values]
    return f"median {statistics.median(scaled):{fmt}} ({min(scaled):{fmt}} – {max(scaled):{fmt}})"


def compile_project() -> None:
    """Write the project's bytecode before anything is timed, as an installed copy has it (the
    container image, a first run): with PYTHONDONTWRITEBYTECODE set, every import_json would
    otherwise compile the project's own modules again (about 0.1 CPU s)."""
    packages = [p for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name not in ("tests", "benchmarks")]
    for package in packages:
        compileall.compile_dir(package, quiet=1)
    compileall.compile_file(ROOT / "manage.py", quiet=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="audit-log entries, and as many messages")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out"), help="where generated data goes")
    parser.add_argument("--skip-loaddata", action="store_true")
    parser.add_argument(
        "--raw-floor",
        action="store_true",
        help="also time the bare driver re-inserting the imported rows (COPY / multi-row INSERT / executemany)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="with --raw-floor --skip-loaddata: run import and floor alternately N times and print the medians",
    )
    parser.add_argument(
        "--python-too",
        action="store_true",
        help="with --raw-floor --skip-loaddata: also run the import without its C module (AGENTFORGE_NATIVE=0)",
    )
    args = parser.parse_args()
    if (args.repeat > 1 or args.python_too) and not (args.raw_floor and args.skip_loaddata):
        parser.error("--repeat and --python-too need --raw-floor and --skip-loaddata")
    env = {**os.environ, "DEBUG": os.environ.get("DEBUG", "1"), "DJANGO_SETTINGS_MODULE": "agentforge_site.settings"}
    out = Path(args.out) / f"legacy-{args.rows}"
    if not (out / "conversations.json").is_file():
        print(f"generating {out} ...", flush=True)
        generate(out, args.rows)
    size = sum(p.stat().st_size for p in out.rglob("*.json")) / 2**20
    compile_project()
    manage("migrate", "-v0", env=env)
    db = os.environ.get("DB_TYPE", "sqlite")
    pid = server_pid(env)
    contenders = {"import_json": env}
    if args.python_too:  # the same import with the pure-Python row encoders (agentforge_core.native)
        contenders["import_json, pure Python"] = {**env, "AGENTFORGE_NATIVE": "0"}
    runs = {label: [] for label in contenders}  # (client CPU/row, server CPU/row, floor CPU/row, ratio)
    for run in range(args.repeat):
        if args.repeat > 1:
            print(f"--- run {run + 1} of {args.repeat}", flush=True)
        measured = []
        # the two imports swap places each run: whichever follows the floor meets its after-effects
        order = list(contenders.items())
        for label, contender_env in order[::-1] if run % 2 else order:
            reset(env)
            seconds, rss, total, cpu, server = timed("import_json", str(out), "-v0", env=contender_env, server_pid=pid)
            rows = count_rows(env)
            print(f"backend={db} input={size:.0f} MiB rows={rows:,}")
            print(
                f"{label + ':':<26}{seconds:6.1f} s  {rows / seconds:9,.0f} rows/s  {describe_cpu(cpu, server, rows, pid)}\n"
                f"             (start-up included; with its reader process); peak RSS {rss:.0f} MiB ({total:.0f} with the reader)",
                flush=True,
            )
            measured.append((label, rows, seconds, cpu, server))
        if args.raw_floor and args.skip_loaddata:
            floor_per_row = print_raw_floor(env, pid, measured)
            for label, rows, seconds, cpu, server in measured:
                runs[label].append((cpu / rows, server / rows, floor_per_row, (cpu + server) / rows / floor_per_row))
    if args.skip_loaddata:
        for label, results in runs.items():
            if len(results) < 2:
                continue
            split = f" (here {spread([r[0] for r in results], 1e6)}, server {spread([r[1] for r in results], 1e6)})"
            print(
                f"over {len(results)} alternated runs, CPU us/row: {label} {spread([a + b for a, b, _, _ in results], 1e6)}"
                f"{split if pid else ''}, floor {spread([r[2] for r in results], 1e6)};"
                f" {label} / floor {spread([r[3] for r in results], fmt='.2f')}x"
            )
        return
    fixture = out.parent / f"fixture-{args.rows}-{db}.json"
    manage(
        "dumpdata",
        "--all",
        "accounts.Organization",
        "accounts.User",
        "settings_app.UserPreference",
        "accounts.MFASettings",
        "agents.Agent",
        "security.AuditLog",
        "conversations.Conversation",
        "conversations.Message",
        "-o",
        str(fixture),
        "-v0",
        env=env,
    )
    # auditlog writes its own entries while loaddata saves the organization and users; the
    # fixture's audit entries then get new ids instead of colliding with those (append-only).
    with open(fixture) as fh:
        objects = json.load(fh)
    for obj in objects:
        if obj["model"] == "security.auditlog":
            obj.pop("pk", None)
    with open(fixture, "w") as fh:
        json.dump(objects, fh)
    del objects
    if args.raw_floor:  # after the fixture: it re-inserts the same rows
        print_raw_floor(env, pid, measured)
    reset(env)
    seconds_ld, rss_ld, _total, cpu_ld, server = timed("loaddata", str(fixture), "-v0", env=env, server_pid=pid)
    print(
        f"loaddata:    {seconds_ld:7.1f} s  {rows / seconds_ld:9,.0f} rows/s  {describe_cpu(cpu_ld, server, rows, pid)}"
        f"  peak RSS {rss_ld:.0f} MiB"
    )
    print(f"speed-up: {seconds_ld / seconds:.1f}x")
    fixture.unlink()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--raw-floor-child"]:
        raw_floor_child(sys.argv[2].split(","), int(sys.argv[3]) or None)
    elif sys.argv[1:2] == ["--settle-child"]:
        settle_child()
    else:
        main()
