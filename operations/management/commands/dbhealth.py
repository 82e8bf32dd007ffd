import json

from django.core.management.base import CommandError
from django.db import connections

from agentforge_site.management import AgentForgeCommand
from knowledge.vectors import freshness as vector_index_freshness
from operations.connection import describe_target, one_line_error
from operations.health import BIG_TABLE_ROWS, build_report, index_efficiency


def _size(n) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Command(AgentForgeCommand):
    help = (
        "Database health for a terminal: reachability, latency, pool, migrations, storage against "
        "DB_STORAGE_QUOTA_MB, slow queries, failed transactions, dual-write failures, the largest tables "
        "and, on PostgreSQL and MariaDB/MySQL, index efficiency. Exit 1 when unhealthy."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument(
            "--tables", type=int, default=10, help="How many of the largest tables to list (default 10)."
        )
        parser.add_argument(
            "--big-rows",
            type=int,
            default=BIG_TABLE_ROWS,
            help=f"Rows from which a table counts as big for sequential scans (default {BIG_TABLE_ROWS}).",
        )
        self.add_database_argument(parser)

    def handle(self, *args, **options):
        alias = self.get_database(options)
        report = build_report(alias, tables=options["tables"])
        database = report["checks"]["database"]
        if not database["ok"]:
            name, host = describe_target(alias)
            raise CommandError(
                f"cannot connect to {database['vendor']} database {name!r} at {host}: {database.get('error', 'unreachable')}"
            )
        conn = connections[alias]
        if conn.vendor in ("postgresql", "mysql"):
            try:
                report["checks"]["indexes"] = index_efficiency(conn, options["big_rows"])
            except Exception as exc:
                report["checks"]["indexes"] = {"available": False, "error": one_line_error(exc)}
        self.check_vector_index(report)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
        else:
            self.print_report(report, alias)
        if not report["healthy"]:
            raise CommandError("unhealthy: " + "; ".join(report["reasons"]))

    def check_vector_index(self, report):
        # Here rather than in build_report: it counts chunk rows, too heavy for /health/ probes.
        try:
            check = vector_index_freshness()
        except Exception as exc:
            check = {"ok": False, "problems": [one_line_error(exc)]}
        report["checks"]["vector_index"] = check
        if not check["ok"]:
            report["alerts"].append(
                {
                    "check": "vector_index",
                    "level": "warning",
                    "message": "; ".join(check["problems"][:3]) + " (run manage.py rebuild_vector_index)",
                }
            )
            if report["status"] == "ok":
                report["status"] = "degraded"

    def print_report(self, report, alias):
        out = self.stdout.write
        checks = report["checks"]
        db = checks["database"]
        name, host = describe_target(alias)
        status_style = {"ok": self.style.SUCCESS, "degraded": self.style.WARNING}.get(
            report["status"], self.style.ERROR
        )
        out(
            f"status:       {status_style(report['status'].upper())}  (checked {report['checked_at']} in {report['duration_ms']} ms)"
        )
        out(f"database:     {db['vendor']} {db.get('server_version', '')}  {name} ({host})")
        connect = f", new connection {db['connect_ms']} ms" if "connect_ms" in db else ""
        out(f"latency:      {db.get('latency_ms')} ms (SELECT 1){connect}")
        pool = {k: v for k, v in checks["pool"].items() if k != "ok"}
        out("pool:         " + ", ".join(f"{k}={v}" for k, v in pool.items()))
        mig = checks.get("migrations", {})
        out(
            f"migrations:   {mig.get('pending', '?')} pending"
            + "".join(f"\n  pending: {m}" for m in mig.get("pending_names", []))
        )
        st = checks.get("storage", {})
        if "error" in st:
            out(f"storage:      unknown ({st['error']})")
        else:
            quota = (
                f" of {st['quota_mb']:g} MB quota ({st['used_pct']}%, alert at {st['alert_at_pct']:g}%)"
                if st.get("quota_mb")
                else " (no DB_STORAGE_QUOTA_MB set)"
            )
            out(f"storage:      {st.get('used_mb')} MB{quota}  [{st.get('method')}]")
        q = checks["queries"]
        out(
            f"slow queries: {q['slow_queries']} over {q['slow_query_threshold_ms']:g} ms in this process since {q['since']}"
        )
        out(f"failed tx:    {q['failed_transactions']} {q['failed_by_class'] or ''}".rstrip())
        out(f"dual-write:   {checks['dual_write']['failures']} failures")
        for replica in checks.get("replicas", []):
            name, host = describe_target(replica["alias"])
            lag = "?" if replica["lag_s"] is None else f"{replica['lag_s']:g} s"
            state = "in use" if replica["in_use"] else self.style.WARNING(f"SKIPPED ({replica['reason']})")
            paused = ", replay paused" if replica["replay_paused"] else ""
            error = f"\n  {replica['error']}" if replica["error"] else ""
            out(f"replica:      {replica['alias']} ({host}) {state}, lag {lag}{paused}{error}")
        tables = checks.get("tables")
        if isinstance(tables, list) and tables:
            out("largest tables:")
            for t in tables:
                rows = t.get("rows", t.get("rows_estimate"))
                est = "~" if "rows_estimate" in t else ""
                out(f"  {t['table']:<40} {_size(t.get('bytes')):>10}  {est}{rows if rows is not None else '?'} rows")
        idx = checks.get("indexes")
        if idx:
            if not idx.get("available"):
                out(f"indexes:      {idx.get('note') or idx.get('error')}")
                if idx.get("server_counters"):
                    out("  server counters: " + ", ".join(f"{k}={v}" for k, v in idx["server_counters"].items()))
            else:
                out(
                    f"indexes:      source {idx['source']}"
                    + (f", statistics since {idx['stats_since']}" if idx.get("stats_since") else "")
                )
                unused = idx["unused_indexes"]
                out(f"  unused indexes: {len(unused)}")
                for u in unused[:30]:
                    size = f" ({_size(u['bytes'])})" if "bytes" in u else ""
                    out(f"    {u['table']}.{u['index']}{size}")
                if len(unused) > 30:
                    out(f"    ... and {len(unused) - 30} more (--json lists them all)")
                seq = idx["seq_scans_on_big_tables"]
                out(f"  sequential scans on tables over {idx['big_table_rows']} rows: {len(seq)}")
                for s in seq:
                    out("    " + s["table"] + ": " + ", ".join(f"{k}={v}" for k, v in s.items() if k != "table"))
        vec = checks.get("vector_index", {})
        if "sets" in vec:
            out(
                f"vector index: {vec['sets']} sets, {vec['files']} cache files in {vec['directory']}, "
                f"{vec['unversioned_vectors']} unversioned vectors"
            )
        if report["alerts"]:
            out("alerts:")
            for a in report["alerts"]:
                style = self.style.ERROR if a["level"] == "critical" else self.style.WARNING
                out(f"  {style(a['level'].upper())} {a['check']}: {a['message']}")
        else:
            out("alerts:       none")
