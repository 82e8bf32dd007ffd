#!/usr/bin/env python
"""What does PostgreSQL's row-level security cost? The same statements with and without it,
in the same run.

Creates a scratch database (``<DB_NAME>_rls_bench``; never the real one) as the owner role,
fills ``messages`` with N rows spread over conversations in 20 organizations and
``audit_logs`` with N rows (``generate_series``), ANALYZEs, then times, alternating rounds:

* **newest 50 messages** of one conversation, the ORM query AgentForge runs to show a chat
  (``Message.objects.filter(conversation=…).order_by("-created_at")[:50]`` inside the
  organization's scope, autocommit as in a view);
* the same 50 inside ``atomic()`` (one transaction, the organization set once);
* the **audit-log changelist** of the admin through Django's test client, as an
  organization admin (scoped) and as a superuser (unscoped: the bypass role).

"with RLS" connects as the application role (DB_USER: policies enforced, each statement's
transaction names its organization); "without" connects as the owner role
(DB_MIGRATION_USER, a superuser here: no policy applies and the wrapper steps aside), which
is what the application did before row-level security.

    DB_TYPE=postgresql DB_HOST=127.0.0.1 DB_NAME=af_rls DB_USER=agentforge_app \\
        DB_MIGRATION_USER=postgres .venv/bin/python benchmarks/rls_benchmark.py --rows 1000000

Options: --rows N (1,000,000 messages and as many audit rows), --conversations N (1,000),
--repeat N (200 timed queries / 20 requests per round), --rounds N (3), --keep, --json.
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

from benchmarks.admin_audit_benchmark import _not_null_defaults, fill_postgresql, make_people  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--conversations", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
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

    from accounts import rls

    if settings.DB_TYPE != "postgresql":
        sys.exit("rls_benchmark: row-level security is PostgreSQL's; set DB_TYPE=postgresql")
    setup_test_environment()
    logging.getLogger("agentforge.slow_query").setLevel(logging.ERROR)  # the bulk fill is slow on purpose
    base = settings.DATABASES["default"]
    base.setdefault("TEST", {})["NAME"] = f"{base['NAME']}_rls_bench"
    rls.use_owner_role(connection)
    created = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=keep)
    return connection, created


def fill_messages(connection, rows: int, conversations: int, orgs, users):
    """``conversations`` conversations round-robin over the organizations, ``rows`` messages
    round-robin over the conversations, one minute apart."""
    from conversations.models import Conversation, Message

    conv_extra = _not_null_defaults(Conversation, {"id", "org_id", "user_id", "created_at", "updated_at"})
    msg_extra = _not_null_defaults(
        Message, {"id", "org_id", "conversation_id", "role", "content", "created_at", "position"}
    )
    cols = lambda extra: "".join(f", {c}" for c in extra)  # noqa: E731
    vals = lambda extra: "".join(f", {v}" for v in extra.values())  # noqa: E731
    first_users = [str(next(u for u in users if u.org_id == o.pk).pk) for o in orgs]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO conversations (id, org_id, user_id, created_at, updated_at{cols(conv_extra)})
                SELECT md5('conv' || g)::uuid, (%(orgs)s::uuid[])[1 + g %% {len(orgs)}],
                       (%(users)s::uuid[])[1 + g %% {len(orgs)}], now(), now(){vals(conv_extra)}
                FROM generate_series(0, %(n)s - 1) AS g""",
            {"orgs": [str(o.pk) for o in orgs], "users": first_users, "n": conversations},
        )
        cursor.execute(
            f"""INSERT INTO messages (id, org_id, conversation_id, role, content, created_at, position{cols(msg_extra)})
                SELECT gen_random_uuid(), c.org_id, c.id, CASE WHEN g %% 2 = 0 THEN 'user' ELSE 'assistant' END,
                       'message ' || g || ' ' || repeat('lorem ipsum ', 8), now() - (g * interval '1 minute'),
                       g / %(n)s{vals(msg_extra)}
                FROM generate_series(0, %(rows)s - 1) AS g
                JOIN conversations c ON c.id = md5('conv' || (g %% %(n)s))::uuid""",
            {"n": conversations, "rows": rows},
        )
        cursor.execute("VACUUM ANALYZE conversations")
        cursor.execute("VACUUM ANALYZE messages")


def _stats(timings):
    timings = sorted(timings)
    return {
        "median_ms": round(statistics.median(timings), 3),
        "p95_ms": round(timings[int(0.95 * (len(timings) - 1))], 3),
    }


def time_newest_50(org, conversation_id, repeat, in_atomic):
    from django.db import transaction

    from agentforge_core.tenancy import org_scope
    from conversations.models import Message

    def run():
        with org_scope(org):
            if in_atomic:
                with transaction.atomic():
                    return list(Message.objects.filter(conversation_id=conversation_id).order_by("-created_at")[:50])
            return list(Message.objects.filter(conversation_id=conversation_id).order_by("-created_at")[:50])

    for _ in range(20):
        assert len(run()) == 50
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def time_changelist(client, repeat):
    from django.urls import reverse

    url = reverse("admin:security_auditlog_changelist")
    for _ in range(3):
        assert client.get(url).status_code == 200
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - start) * 1000)
    assert response.status_code == 200
    return timings


def main():
    args = parse_args()
    connection, db_name = setup_database(args.keep)
    from django.test import Client

    from accounts import rls
    from agentforge_core.tenancy import unscoped
    from conversations.models import Message
    from security.models import AuditLog

    try:
        with unscoped():
            orgs, users, root, orgadmin = make_people()
            fill_start = time.perf_counter()
            if Message.all_orgs.count() < args.rows:
                fill_messages(connection, args.rows, args.conversations, orgs, users)
            have = AuditLog.all_orgs.count()
            if have < args.rows:
                fill_postgresql(connection, args.rows - have, orgs, users)
            fill_seconds = time.perf_counter() - fill_start
            messages = Message.all_orgs.count()
            audit_rows = AuditLog.all_orgs.count()
            conv = Message.all_orgs.values_list("conversation_id", "org_id").first()
        org = next(o for o in orgs if o.pk == conv[1])
        rls.grant_app_privileges(connection)

        results = {}
        setups = {"with RLS": rls.use_app_role, "without RLS": rls.use_owner_role}
        for _ in range(args.rounds):
            for label, use in setups.items():
                use(connection)
                superuser, admin_client = Client(), Client()
                superuser.force_login(root)
                admin_client.force_login(orgadmin)
                for name, timings in (
                    ("newest 50 messages (autocommit)", time_newest_50(org, conv[0], args.repeat, in_atomic=False)),
                    ("newest 50 messages (in atomic)", time_newest_50(org, conv[0], args.repeat, in_atomic=True)),
                    ("audit changelist, org admin", time_changelist(admin_client, max(5, args.repeat // 10))),
                    ("audit changelist, superuser", time_changelist(superuser, max(5, args.repeat // 10))),
                ):
                    results.setdefault(name, {}).setdefault(label, []).extend(timings)
    finally:
        rls.use_owner_role(connection)
        if not args.keep:
            connection.creation.destroy_test_db(db_name, verbosity=0)

    rows = []
    for name, by_label in results.items():
        with_rls, without = _stats(by_label["with RLS"]), _stats(by_label["without RLS"])
        rows.append(
            {
                "query": name,
                "with_rls": with_rls,
                "without_rls": without,
                "ratio": round(with_rls["median_ms"] / without["median_ms"], 2),
            }
        )
    summary = {
        "messages": messages,
        "audit_rows": audit_rows,
        "fill_seconds": round(fill_seconds, 1),
        "rounds": args.rounds,
        "repeat": args.repeat,
        "results": rows,
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(
        f"messages: {messages:,} in {args.conversations:,} conversations; audit_logs: {audit_rows:,} "
        f"(filled in {fill_seconds:.1f}s); {args.rounds} alternating rounds"
    )
    print(f"{'statement':34} {'with RLS median':>16} {'p95':>8} {'without median':>15} {'p95':>8} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['query']:34} {r['with_rls']['median_ms']:>13.3f} ms {r['with_rls']['p95_ms']:>8.3f} "
            f"{r['without_rls']['median_ms']:>12.3f} ms {r['without_rls']['p95_ms']:>8.3f} {r['ratio']:>6.2f}"
        )


if __name__ == "__main__":
    main()
