#!/usr/bin/env python
"""How fast is the audit-log changelist on a big table?

Creates a scratch database (``<DB_NAME>_bench`` by default; never the real one), fills
``audit_logs`` with N rows the fast way (``generate_series`` on PostgreSQL, batched
multi-row inserts elsewhere), ANALYZEs, then times the admin changelist through Django's
test client for several pages: unfiltered, filtered by organization / action / success /
date, a search, and an organization admin's view. Prints median and p95 milliseconds,
the queries per page, and whether any full ``COUNT(*)`` ran.

    DB_TYPE=postgresql DB_HOST=127.0.0.1 DB_USER=postgres DB_NAME=af_admin \\
        .venv/bin/python benchmarks/admin_audit_benchmark.py --rows 1000000

Options: --rows N (1,000,000), --repeat N (30 timed requests per page), --keep (keep the
scratch database and reuse it when it already has the rows), --json (one JSON line).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ACTIONS = [
    "login",
    "logout",
    "login_failed",
    "create",
    "update",
    "delete",
    "export",
    "api_call",
    "password_change",
    "mfa_verify",
]
ORGS = 20
USERS_PER_ORG = 10
# The audit_logs columns both fills give a value, in the order the generic fill sends them;
# every other NOT NULL column gets its model default (_not_null_defaults).
FILLED_COLUMNS = (
    "org_id",
    "user_id",
    "action",
    "legacy_action",
    "created_at",
    "remote_addr",
    "user_agent",
    "success",
    "resource_type",
    "resource_id",
    "object_pk",
    "object_repr",
    "changes",
    "changes_text",
    "user_name",
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the scratch database")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    return parser.parse_args()


def setup_database(keep: bool):
    import django
    from django.conf import settings

    django.setup()
    import logging

    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()  # "testserver" host, in-memory mail
    logging.getLogger("agentforge.slow_query").setLevel(logging.ERROR)  # the bulk fill is slow on purpose

    base = settings.DATABASES["default"]
    if settings.DB_TYPE == "sqlite":
        data_dir = Path(settings.BASE_DIR) / "data"
        data_dir.mkdir(exist_ok=True)  # a fresh clone has no data/
        name = str(data_dir / "admin_bench.sqlite3")
    else:
        name = f"{base['NAME']}_bench"
    base.setdefault("TEST", {})["NAME"] = name
    created = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=keep)
    return connection, created


def make_people():
    from django.contrib.auth.models import Permission as DjangoPermission

    from accounts.models import Organization, User

    orgs = list(Organization.all_orgs.filter(slug__startswith="bench-").order_by("slug"))
    if len(orgs) < ORGS:
        orgs = [
            Organization.all_orgs.get_or_create(slug=f"bench-{i:02d}", defaults={"name": f"Bench org {i:02d}"})[0]
            for i in range(ORGS)
        ]
    users = []
    for org in orgs:
        existing = list(User.all_orgs.filter(org=org, email__startswith="member"))
        if len(existing) < USERS_PER_ORG:
            existing = [
                User.all_orgs.get_or_create(
                    org=org,
                    email_normalized=f"member{j}@{org.slug}.test",
                    defaults={"email": f"member{j}@{org.slug}.test"},
                )[0]
                for j in range(USERS_PER_ORG)
            ]
        users.extend(existing)
    root = User.all_orgs.filter(email_normalized="root@bench.test").first() or User.all_orgs.create_superuser(
        email="root@bench.test", org=orgs[0]
    )
    orgadmin = User.all_orgs.filter(email_normalized="orgadmin@bench.test").first()
    if orgadmin is None:
        orgadmin = User.all_orgs.create_user(email="orgadmin@bench.test", org=orgs[0], is_staff=True)
        orgadmin.user_permissions.add(DjangoPermission.objects.get(codename="view_auditlog"))
    return orgs, users, root, orgadmin


def _not_null_defaults(model, given: set[str]) -> dict[str, str]:
    """SQL literals for NOT NULL columns the insert does not set (Django has no DB defaults)."""
    from django.db import models

    values = {}
    for field in model._meta.concrete_fields:
        if field.primary_key or field.null or field.column in given:
            continue
        if isinstance(field, models.JSONField):
            values[field.column] = "'" + json.dumps(field.get_default()).replace("'", "''") + "'"
        elif isinstance(field, models.BooleanField):
            values[field.column] = "TRUE"
        elif isinstance(field, (models.IntegerField, models.BigIntegerField)):
            values[field.column] = "0"
        else:
            values[field.column] = "''"
    return values


def fill_postgresql(connection, rows: int, orgs, users):
    from security.models import AuditLog

    org_ids = [str(o.pk) for o in orgs]
    user_ids = [[str(u.pk) for u in users if u.org_id == o.pk] for o in orgs]
    extra = _not_null_defaults(AuditLog, set(FILLED_COLUMNS))
    extra_cols = "".join(f", {c}" for c in extra)
    extra_vals = "".join(f", {v}" for v in extra.values())
    sql = f"""
        INSERT INTO audit_logs (org_id, user_id, action, legacy_action, created_at, remote_addr, user_agent,
                                success, resource_type, resource_id, object_pk, object_repr, changes,
                                changes_text, user_name{extra_cols})
        SELECT (%(orgs)s::uuid[])[1 + g %% {len(orgs)}],
               (%(users)s::uuid[])[1 + g %% {len(orgs)}],
               g %% 4,
               (%(actions)s::text[])[1 + (g / 7) %% {len(ACTIONS)}],
               now() - (g * interval '31 seconds'),
               ('10.' || (g %% 250) || '.' || ((g / 250) %% 250) || '.' || (g %% 7))::inet,
               'Mozilla/5.0 (X11; Linux x86_64) bench/' || (g %% 50),
               (g %% 17) <> 0,
               'agent', 'res-' || g, g::text, 'Agent ' || g,
               jsonb_build_object('name', jsonb_build_array('old ' || g, 'new ' || g)),
               '', ''{extra_vals}
        FROM generate_series(1, %(rows)s) AS g
    """
    # The actor: one member per organization, in the same order as the organizations.
    first_users = [ids[0] for ids in user_ids]
    with connection.cursor() as cursor:
        cursor.execute(sql, {"orgs": org_ids, "users": first_users, "actions": ACTIONS, "rows": rows})
    # What autovacuum would do soon after a bulk load (visibility map, statistics).
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE audit_logs")


def fill_generic(connection, rows: int, orgs, users):
    """Batched multi-row INSERTs (SQLite, MariaDB/MySQL)."""
    import datetime as dt
    import json as _json

    from security.models import AuditLog

    extra = _not_null_defaults(AuditLog, set(FILLED_COLUMNS))
    extra = {c: ("1" if v == "TRUE" else v) for c, v in extra.items()}
    columns = list(FILLED_COLUMNS)
    qn = connection.ops.quote_name
    now = dt.datetime.now(dt.timezone.utc)
    org_hex = [o.pk.hex if connection.vendor != "postgresql" else str(o.pk) for o in orgs]
    first_user = {o.pk: next(u for u in users if u.org_id == o.pk) for o in orgs}
    user_hex = [first_user[o.pk].pk.hex for o in orgs]
    batch = 2000
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + "".join(f", {v}" for v in extra.values()) + ")"
    head = f"INSERT INTO audit_logs ({', '.join(qn(c) for c in columns)}{''.join(', ' + qn(c) for c in extra)}) VALUES "
    with connection.cursor() as cursor:
        for start in range(1, rows + 1, batch):
            values, params = [], []
            for g in range(start, min(start + batch, rows + 1)):
                o = g % len(orgs)
                when = now - dt.timedelta(seconds=31 * g)
                params += [
                    org_hex[o],
                    user_hex[o],
                    g % 4,
                    ACTIONS[(g // 7) % len(ACTIONS)],
                    when.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    f"10.{g % 250}.{(g // 250) % 250}.{g % 7}",
                    f"Mozilla/5.0 (X11; Linux x86_64) bench/{g % 50}",
                    g % 17 != 0,
                    "agent",
                    f"res-{g}",
                    str(g),
                    f"Agent {g}",
                    _json.dumps({"name": [f"old {g}", f"new {g}"]}),
                    "",
                    "",
                ]
                values.append(placeholders)
            cursor.execute(head + ", ".join(values), params)
        cursor.execute("ANALYZE audit_logs" if connection.vendor != "mysql" else "ANALYZE TABLE audit_logs")


def time_page(client, url, params, repeat):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.admin_support import request_scope

    for _ in range(3):  # warm-up
        response = client.get(url, params)
        assert response.status_code == 200, response.status_code
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(url, params)
        timings.append((time.perf_counter() - start) * 1000)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, params)
    full_counts = [
        q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper() and "LIMIT" not in q["sql"].upper()
    ]
    timings.sort()
    with request_scope(response):  # the changelist's rows come from the scoped managers
        rows_on_page = len(response.context["cl"].result_list)
    return {
        "median_ms": round(statistics.median(timings), 1),
        "p95_ms": round(timings[max(0, int(round(0.95 * len(timings))) - 1)], 1),
        "queries": len(ctx.captured_queries),
        "full_count_queries": len(full_counts),
        "rows_on_page": rows_on_page,
        "result_count": response.context["cl"].result_count,
    }


def main():
    args = parse_args()
    connection, db_name = setup_database(args.keep)
    from django.test import Client
    from django.urls import reverse

    from security.models import AuditLog

    try:
        orgs, users, root, orgadmin = make_people()
        have = AuditLog.all_orgs.count()
        fill_start = time.perf_counter()
        if have < args.rows:
            (fill_postgresql if connection.vendor == "postgresql" else fill_generic)(
                connection, args.rows - have, orgs, users
            )
        fill_seconds = time.perf_counter() - fill_start
        total = AuditLog.all_orgs.count()

        url = reverse("admin:security_auditlog_changelist")
        superuser = Client()
        superuser.force_login(root)
        admin_client = Client()
        admin_client.force_login(orgadmin)
        week_ago = (AuditLog.all_orgs.order_by("-timestamp").values_list("timestamp", flat=True).first()).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        scenarios = [
            ("superuser, unfiltered", superuser, {}),
            ("superuser, page 20", superuser, {"p": "20"}),
            ("superuser, one organization", superuser, {"org": str(orgs[3].pk)}),
            ("superuser, action=login_failed", superuser, {"action": "login_failed"}),
            ("superuser, success=no", superuser, {"success__exact": "0"}),
            ("superuser, since a day", superuser, {"timestamp__gte": str(week_ago)}),
            ("superuser, search IP", superuser, {"q": "10.3.1.1"}),
            ("superuser, search actor email", superuser, {"q": "member0@bench-05.test"}),
            ("org admin, unfiltered", admin_client, {}),
        ]
        results = []
        for label, client, params in scenarios:
            result = time_page(client, url, params, args.repeat)
            result["page"] = label
            results.append(result)
    finally:
        if not args.keep:
            connection.creation.destroy_test_db(db_name, verbosity=0)

    summary = {
        "backend": connection.vendor,
        "rows": total,
        "fill_seconds": round(fill_seconds, 1),
        "repeat": args.repeat,
        "pages": results,
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(
        f"audit_logs rows: {total:,} on {connection.vendor} (filled in {fill_seconds:.1f}s); {args.repeat} timed requests per page"
    )
    print(
        f"{'page':38} {'median ms':>10} {'p95 ms':>8} {'queries':>8} {'full COUNT':>11} {'rows':>5} {'count shown':>12}"
    )
    for r in results:
        print(
            f"{r['page']:38} {r['median_ms']:>10} {r['p95_ms']:>8} {r['queries']:>8} {r['full_count_queries']:>11} "
            f"{r['rows_on_page']:>5} {r['result_count']:>12,}"
        )


if __name__ == "__main__":
    main()
