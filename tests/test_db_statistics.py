"""Planner statistics are current after import_json and migrate, so the scoped newest-messages
query uses the conversation index on every backend without anyone running ANALYZE."""

from __future__ import annotations

import json
import uuid

import pytest
from django.core.management import call_command
from django.db import connection

from accounts.models import Organization
from agentforge_core.tenancy import org_scope, unscoped
from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)


def _write_chats(root, conversations=20, messages=30):
    agent_id = str(uuid.uuid4())
    (root / "agents.json").write_text(json.dumps({agent_id: {"id": agent_id, "name": "Helper"}}))
    chats = {}
    for c in range(conversations):
        cid = str(uuid.uuid4())
        chats[cid] = {
            "id": cid,
            "agent_id": agent_id,
            "title": f"Chat {c}",
            "created_at": f"2026-01-{c + 1:02d}T10:00:00",
            "updated_at": f"2026-01-{c + 1:02d}T10:00:00",
            "messages": [
                {
                    "id": str(uuid.uuid4()),
                    "role": "user" if m % 2 == 0 else "assistant",
                    "content": f"message {m}",
                    "timestamp": f"2026-01-{c + 1:02d}T10:{m // 60:02d}:{m % 60:02d}",
                }
                for m in range(messages)
            ],
        }
    (root / "conversations.json").write_text(json.dumps(chats))


def _statistics(table: str):
    """What the backend knows of ``table``: SQLite's sqlite_stat1 rows, PostgreSQL's last ANALYZE
    time, InnoDB's persistent row count."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
            if not cursor.fetchone()[0]:
                return 0
            cursor.execute("SELECT count(*) FROM sqlite_stat1 WHERE tbl = %s", [table])
        elif connection.vendor == "postgresql":
            cursor.execute("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = %s", [table])
        else:
            cursor.execute(
                "SELECT n_rows FROM mysql.innodb_table_stats WHERE database_name = DATABASE() AND table_name = %s",
                [table],
            )
        row = cursor.fetchone()
        return row[0] if row else None


def test_import_leaves_the_imported_tables_analysed(tmp_path):
    _write_chats(tmp_path)
    Organization.get_default()
    if connection.vendor == "sqlite":  # statistics of earlier tests' imports stay in sqlite_stat1
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
            if cursor.fetchone()[0]:
                cursor.execute("DELETE FROM sqlite_stat1 WHERE tbl IN ('messages', 'conversations')")
    before = {table: _statistics(table) for table in ("messages", "conversations")}
    call_command("import_json", str(tmp_path), verbosity=0)
    assert Message.all_orgs.count() == 600
    after = {table: _statistics(table) for table in ("messages", "conversations")}
    if connection.vendor == "mysql":
        assert after["messages"] == 600  # the import's rows, not the empty table's figure
    else:
        for table in after:
            assert after[table] and after[table] != before[table], (table, before[table], after[table])


@pytest.mark.backends("postgresql")
@pytest.mark.parametrize(
    "table, skipped",
    [
        ("messages", {"id", "tool_calls", "sources", "legacy_extra"}),
        ("audit_logs", {"id", "legacy_id", "prev_hash", "entry_hash", "serialized_data", "changes", "user_name"}),
    ],
)
def test_postgresql_analyses_the_columns_queries_use_and_skips_the_payloads(table, skipped):
    """SkipColumnStatistics (the migrations of security and conversations): ANALYZE computes what
    the planner reads, not the JSON, hashes and keys no condition names (statistics target 0; the
    rest keep the server's default, -1). pg_stats itself hides tables under row-level security."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname, attstattarget FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped",
            [table],
        )
        targets = dict(cursor.fetchall())
    assert {column for column, target in targets.items() if target == 0} >= skipped
    conditions = {"org_id", "created_at"} | (
        {"conversation_id", "content", "legacy_id"} if table == "messages" else set()
    )
    conditions |= (
        {"success", "action", "user_id", "remote_addr", "object_pk", "resource_id", "legacy_action", "content_type_id"}
        if table == "audit_logs"
        else set()
    )
    assert {column: targets[column] for column in conditions} == dict.fromkeys(conditions, -1)


@pytest.mark.backends("sqlite")
def test_sqlite_scoped_newest_messages_use_the_conversation_index(tmp_path):
    _write_chats(tmp_path)
    org = Organization.get_default()
    call_command("import_json", str(tmp_path), verbosity=0)
    with org_scope(org):
        oldest = Conversation.objects.order_by("created_at").first()
        query = Message.objects.filter(conversation=oldest).order_by("-created_at")[:50]
        sql, params = query.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
        assert "messages_conv_created_idx" in plan, plan
        assert len(list(query)) == 30


@pytest.mark.backends("sqlite")
def test_migrate_ends_with_sqlite_optimize():
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        call_command("migrate", verbosity=0)
    assert [q["sql"] for q in ctx.captured_queries if "optimize" in q["sql"]] == ["PRAGMA optimize"]


@pytest.mark.backends("postgresql")
def test_postgresql_knows_a_conversation_decides_the_organization_of_its_messages():
    """A scoped query filters on the conversation and on the organization. Taken as
    independent, the planner expected 1/20 of a conversation's messages with 20 organizations
    and intersected the (org_id, …) index with the conversation's, then sorted: 10 ms for the
    newest 50 of 1,000,000 messages instead of 0.1 ms (benchmarks/rls_benchmark.py). The link
    statistics (accounts.tenant_schema) make the estimate the conversation's own row count."""
    import datetime as dt

    from django.utils import timezone

    from agentforge_site.db_statistics import refresh_statistics

    orgs = [Organization.objects.create(name=f"Plan {i}", slug=f"plan-{i}") for i in range(20)]
    start = timezone.now() - dt.timedelta(days=30)
    conversations, messages = [], []
    for org in orgs:
        for c in range(5):
            conversation = Conversation(org=org, title=f"c{c}")
            conversations.append(conversation)
            messages += [
                Message(
                    org=org,
                    conversation=conversation,
                    role="user",
                    content="x",
                    position=n,
                    created_at=start + dt.timedelta(minutes=n),
                )
                for n in range(200)
            ]
    with unscoped():
        Conversation.all_orgs.bulk_create(conversations)
        Message.all_orgs.bulk_create(messages, batch_size=2000)
    assert refresh_statistics(["messages", "conversations"]) == ["conversations", "messages"]

    def estimated_rows(plan: dict) -> int | None:
        if plan.get("Relation Name") == "messages":
            return plan["Plan Rows"]
        return next(filter(None, (estimated_rows(child) for child in plan.get("Plans", []))), None)

    with org_scope(orgs[7]):
        conversation = Conversation.objects.order_by("created_at").first()
        query = Message.objects.filter(conversation=conversation)
        sql, params = query.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        assert 150 <= estimated_rows(plan[0]["Plan"]) <= 260, plan  # 200 rows; 10 without the statistics
        assert query.count() == 200
