"""Cached per-request reads (Redis, local memory) against the uncached ORM and a bare round trip.

    .venv/bin/python benchmarks/cache_benchmark.py [--orgs 20] [--reads 2000]
    DB_TYPE=postgresql DB_HOST=127.0.0.1 DB_USER=postgres DB_NAME=af_bench .venv/bin/python benchmarks/cache_benchmark.py

Uses the configured backend with a scratch test database (created and dropped here; SQLite a
temporary file) and the Redis at CACHE_BENCH_REDIS_URL (default redis://127.0.0.1:6379/14).
Each organization gets 40 settings, 6 roles in a chain with 30 permissions, 50 users with two
roles and a group, 10 agents with 5 tools each. Each timed read picks an organization, user or
agent at random. Reads, all in the same run, median microseconds per read:

  org settings       settings_app.models.org_setting_values (the security settings, password policy)
  role permissions   User.effective_permissions() (roles, their ancestors, group roles)
  agent with tools   agents.models.agent_for_chat (a chat turn)

Contenders: the ORM with the cache off (dummy://), the same with server-side prepared
statements (PostgreSQL, DB_PREPARE_THRESHOLD=1), local memory (locmem://), Redis (redis://),
and a bare ``SELECT 1`` through Django's cursor (the floor of any database read).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orgs", type=int, default=20)
    parser.add_argument("--reads", type=int, default=2000, help="timed reads per contender and read")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="af-cache-bench-"))
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("SQLITE_TEST_PATH", str(work / "bench.sqlite3"))
    # One connection, reopened with other options for the prepared-statement contender.
    os.environ["DB_POOL_SIZE"] = "0"
    import agentforge_site

    agentforge_site.setup()
    from django.db import connection
    from django.test.utils import override_settings

    from agentforge_site.dbconfig import build_caches

    redis_url = os.environ.get("CACHE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    rng = random.Random(args.seed)
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        orgs, users, agents = _populate(args.orgs, rng)
        reads = _reads(orgs, users, agents, rng)
        contenders = [("ORM, cache off", "dummy://", None)]
        if connection.vendor == "postgresql":
            contenders.append(("ORM, cache off, prepared statements", "dummy://", 1))
        contenders += [("local memory (locmem)", "locmem://bench", None), ("Redis", redis_url, None)]

        print(
            f"backend {connection.vendor}, {args.orgs} organizations, {args.reads} reads each; median µs per read (p95)"
        )
        header = f"{'contender':40}" + "".join(f"{name:>22}" for name in reads)
        print(header)
        for label, url, prepare in contenders:
            _prepared(connection, prepare)
            with override_settings(CACHES=build_caches({"CACHE_URL": url, "CACHE_KEY_PREFIX": "af-bench"})):
                from django.core.cache import cache

                cache.clear()
                cells = []
                for name, read in reads.items():
                    for _ in range(200):  # fill the cache, warm the connection and statements
                        read()
                    cells.append(_time(read, args.reads))
                cache.clear()
            print(f"{label:40}" + "".join(f"{cell:>22}" for cell in cells))
        _prepared(connection, None)

        def round_trip():
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()

        print(f"{'bare SELECT 1 round trip':40}" + f"{_time(round_trip, args.reads):>22}" * len(reads))
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    return 0


def _prepared(connection, threshold) -> None:
    """Reconnect with server-side prepared statements after ``threshold`` runs, or without."""
    connection.close()
    options = connection.settings_dict["OPTIONS"]
    options.pop("prepare_threshold", None)
    options.pop("server_side_binding", None)
    if threshold is not None:
        options.update(prepare_threshold=threshold, server_side_binding=True)
    connection.features.__dict__.pop("uses_server_side_binding", None)


def _time(read, count: int) -> str:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        read()
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return f"{statistics.median(samples):,.0f} ({samples[int(len(samples) * 0.95)]:,.0f})"


def _populate(org_count: int, rng):
    from accounts.models import (
        Group,
        GroupMembership,
        GroupRole,
        Organization,
        Permission,
        Role,
        RolePermission,
        User,
        UserRole,
    )
    from agentforge_agents.models import Agent, AgentTool, Tool
    from settings_app.models import OrgSetting

    codes = [
        Permission.objects.create(codename=f"resource{n}:{action}") for n in range(15) for action in ("read", "write")
    ]
    orgs, users, agents = [], [], []
    for o in range(org_count):
        org = Organization.all_orgs.create(name=f"Org {o}", slug=f"org-{o}")
        orgs.append(org)
        OrgSetting.all_orgs.bulk_create([OrgSetting(org=org, key=f"security.setting_{k}", value=k) for k in range(40)])
        parent = None
        roles = []
        for r in range(6):
            parent = Role.all_orgs.create(org=org, name=f"Role {r}", parent=parent)
            roles.append(parent)
            RolePermission.all_orgs.bulk_create(
                [RolePermission(org=org, role=parent, permission=p) for p in codes[r * 5 : (r + 1) * 5]]
            )
        group = Group.all_orgs.create(org=org, name="Team")
        GroupRole.all_orgs.create(org=org, group=group, role=roles[2])
        for u in range(50):
            user = User.all_orgs.create_user(email=f"u{u}@org{o}.test", org=org)
            UserRole.all_orgs.bulk_create(
                [UserRole(org=org, user=user, role=role, position=i) for i, role in enumerate(rng.sample(roles, 2))]
            )
            GroupMembership.all_orgs.create(org=org, group=group, user=user)
            users.append(user)
        tools = [
            Tool.all_orgs.create(org=org, name=f"Tool {t}", type="api", credentials={"token": "secret"})
            for t in range(5)
        ]
        for a in range(10):
            agent = Agent.all_orgs.create(org=org, name=f"Agent {a}")
            AgentTool.all_orgs.bulk_create(
                [AgentTool(org=org, agent=agent, tool=t, tool_ref=str(t.pk), position=i) for i, t in enumerate(tools)]
            )
            agents.append(agent)
    return orgs, users, agents


def _reads(orgs, users, agents, rng) -> dict:
    from accounts.models import User
    from agentforge_agents.models import agent_for_chat
    from agentforge_core.tenancy import org_scope
    from settings_app.models import org_setting_values

    # The request already holds its user row (the session loaded it): the role part is the read.
    loaded = {user.pk: User.all_orgs.get(pk=user.pk) for user in users}

    def settings_read():
        org_setting_values(rng.choice(orgs).pk)

    def permissions_read():
        loaded[rng.choice(users).pk].effective_permissions()

    def agent_read():
        agent = rng.choice(agents)
        with org_scope(agent.org_id):
            agent_for_chat(agent.pk)

    return {"org settings": settings_read, "role permissions": permissions_read, "agent with tools": agent_read}


if __name__ == "__main__":
    sys.exit(main())
