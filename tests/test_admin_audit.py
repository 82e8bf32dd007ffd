"""The audit-log admin: read-only for everyone, filters, search, diff, CSV export, query counts."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests.admin_support import admin_world, make_audit, request_scope

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:security_auditlog_changelist"


@pytest.fixture
def world(make_org, make_user):
    world = admin_world(make_org, make_user, rows=False)
    org, other = world["org"], world["other"]
    alice = make_user(org, email="alice@acme.test")
    bob = make_user(other, email="bob@globex.test")
    entries = {
        "alice_login": make_audit(org, actor=alice, legacy_action="login", remote_addr="192.0.2.10"),
        "alice_failed": make_audit(
            org, actor=alice, legacy_action="login_failed", success=False, remote_addr="192.0.2.11"
        ),
        "bob_login": make_audit(other, actor=bob, legacy_action="login", remote_addr="198.51.100.7"),
        "old": make_audit(
            org,
            actor=alice,
            legacy_action="export",
            timestamp=timezone.now() - timedelta(days=400),
            resource_id="res-42",
        ),
    }
    return {**world, "alice": alice, "bob": bob, "entries": entries}


def _listed(response):
    with request_scope(response):
        return {entry.pk for entry in response.context["cl"].result_list}


def test_read_only_for_superusers(client, world):
    client.force_login(world["superuser"])
    entry = world["entries"]["alice_login"]
    assert client.get(reverse("admin:security_auditlog_add")).status_code == 403
    assert client.post(reverse("admin:security_auditlog_add"), {}).status_code == 403
    assert client.post(reverse("admin:security_auditlog_change", args=[entry.pk]), {"success": ""}).status_code == 403
    assert client.get(reverse("admin:security_auditlog_delete", args=[entry.pk])).status_code == 403
    assert client.post(reverse("admin:security_auditlog_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    page = client.get(reverse("admin:security_auditlog_change", args=[entry.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="_save"' not in html and "deletelink" not in html
    changelist = client.get(reverse(CHANGELIST)).content.decode()
    assert "delete_selected" not in changelist
    assert reverse("admin:security_auditlog_add") not in changelist
    # Nothing changed.
    from security.models import AuditLog

    assert AuditLog.all_orgs.filter(pk=entry.pk, success=True).exists()


def test_read_only_for_org_admins(client, world):
    client.force_login(world["orgadmin"])
    entry = world["entries"]["alice_login"]
    assert client.get(reverse("admin:security_auditlog_add")).status_code == 403
    assert client.post(reverse("admin:security_auditlog_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert client.get(reverse("admin:security_auditlog_change", args=[entry.pk])).status_code == 200


def test_columns(client, world):
    client.force_login(world["superuser"])
    html = client.get(reverse(CHANGELIST)).content.decode()
    for header in ("Time", "Organization", "Actor", "Action", "Resource", "Remote address", "User agent", "Success"):
        assert header.lower() in html.lower(), header
    assert "alice@acme.test" in html and "bob@globex.test" in html
    assert "192.0.2.10" in html and "pytest-agent/1.0" in html


def test_filters(client, world):
    client.force_login(world["superuser"])
    e = world["entries"]
    url = reverse(CHANGELIST)
    # (Model changes are audited too, so other entries exist: check membership.)
    other_org = _listed(client.get(url, {"org": str(world["other"].pk)}))
    assert e["bob_login"].pk in other_org and not other_org & {e["alice_login"].pk, e["alice_failed"].pk, e["old"].pk}
    assert _listed(client.get(url, {"org": str(world["other"].pk), "action": "login"})) == {e["bob_login"].pk}
    assert _listed(client.get(url, {"action": "login_failed"})) == {e["alice_failed"].pk}
    assert _listed(client.get(url, {"success__exact": "0"})) == {e["alice_failed"].pk}
    recent = _listed(client.get(url, {"timestamp__gte": str(timezone.now() - timedelta(days=7))}))
    assert e["old"].pk not in recent and e["alice_login"].pk in recent
    # The action filter offers the actions present.
    html = client.get(url).content.decode()
    assert "?action=login_failed" in html and "?action=export" in html


def test_search_by_actor_email_ip_and_resource_id(client, world):
    client.force_login(world["superuser"])
    e = world["entries"]
    url = reverse(CHANGELIST)
    by_email = _listed(client.get(url, {"q": "alice@acme"}))
    assert {e["alice_login"].pk, e["alice_failed"].pk, e["old"].pk} <= by_email
    assert e["bob_login"].pk not in by_email
    assert _listed(client.get(url, {"q": "198.51.100.7"})) == {e["bob_login"].pk}
    assert _listed(client.get(url, {"q": "res-42"})) == {e["old"].pk}


def test_org_admin_sees_own_org_only(client, world):
    client.force_login(world["orgadmin"])
    e = world["entries"]
    response = client.get(reverse(CHANGELIST))
    listed = _listed(response)
    assert e["alice_login"].pk in listed and e["bob_login"].pk not in listed
    assert "bob@globex.test" not in response.content.decode()
    # No organization filter, and other organizations' actions are not offered.
    assert "?org=" not in response.content.decode()
    assert client.get(reverse("admin:security_auditlog_change", args=[e["bob_login"].pk])).status_code == 404
    # Searching for the other organization's user finds nothing.
    assert _listed(client.get(reverse(CHANGELIST), {"q": "bob@globex.test"})) == set()


def test_detail_shows_the_diff_with_secrets_masked(client, world):
    from security.models import AuditLog, OAuthConfig

    client.force_login(world["superuser"])
    entry = make_audit(
        world["org"],
        actor=world["alice"],
        legacy_action="",
        action=AuditLog.Action.UPDATE,
        content_type=ContentType.objects.get_for_model(OAuthConfig),
        object_pk="1",
        changes={"client_id": ["old-client", "new-client"], "client_secret": ["plain-old-XYZZY", "plain-new-XYZZY"]},
    )
    html = client.get(reverse("admin:security_auditlog_change", args=[entry.pk])).content.decode()
    assert 'class="af-diff"' in html
    assert "old-client" in html and "new-client" in html
    assert "plain-old-XYZZY" not in html and "plain-new-XYZZY" not in html
    assert "update" in html


def test_csv_export_streams_selected_rows(client, world):
    client.force_login(world["superuser"])
    e = world["entries"]
    hostile = make_audit(world["org"], actor=world["alice"], legacy_action="login", user_agent="=cmd|' /C calc'!A0")
    response = client.post(
        reverse(CHANGELIST),
        {
            "action": "export_csv",
            "index": "0",
            "_selected_action": [str(e["alice_login"].pk), str(e["bob_login"].pk), str(hostile.pk)],
        },
    )
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:4] == ["time", "organization", "actor", "action"]
    assert len(rows) == 4
    actors = {row[2] for row in rows[1:]}
    assert actors == {"alice@acme.test", "bob@globex.test"}
    assert any(row[8].startswith("'=cmd") for row in rows[1:])  # no live spreadsheet formula


FORMULAS = [
    " =1+1",
    '  \u3000=HYPERLINK("x")',
    "\uff1d1+1",
    "\uff0b1",
    "\uff0d1",
    "\uff20SUM(A1)",
    "\t=1",
    "\r=1",
    "\n+1",
    "-2+3",
    "@SUM(A1)",
    "+1",
]
PLAIN = ["a=b", "1-2", "curl/8.7.1", ""]


def test_csv_export_neutralises_every_formula_starter(client, world):
    client.force_login(world["superuser"])
    made = {make_audit(world["org"], legacy_action="login", user_agent=agent).pk: agent for agent in FORMULAS + PLAIN}
    response = client.post(
        reverse(CHANGELIST), {"action": "export_csv", "index": "0", "_selected_action": list(map(str, made))}
    )
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode(), newline="")))
    agents = sorted(row[8] for row in rows[1:])
    assert agents == sorted(["'" + agent for agent in FORMULAS] + PLAIN)


def test_csv_export_for_org_admin_is_scoped(client, world):
    client.force_login(world["orgadmin"])
    e = world["entries"]
    response = client.post(
        reverse(CHANGELIST),
        {"action": "export_csv", "index": "0", "select_across": "1", "_selected_action": [str(e["alice_login"].pk)]},
    )
    body = b"".join(response.streaming_content).decode()
    assert "alice@acme.test" in body and "bob@globex.test" not in body


def _queries_for_changelist(client, params=None):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(reverse(CHANGELIST), params or {})
    assert response.status_code == 200
    return len(ctx.captured_queries), response


@pytest.mark.parametrize("who", ["superuser", "orgadmin"])
def test_query_count_is_constant(client, world, who):
    from security.models import AuditLog

    client.force_login(world[who])
    AuditLog.all_orgs.exclude(pk=world["entries"]["alice_login"].pk).filter(org=world["org"]).count()
    few, _ = _queries_for_changelist(
        client, {"action": "login", "org": str(world["org"].pk)} if who == "superuser" else {"action": "login"}
    )
    for i in range(60):
        make_audit(world["org"], actor=world["alice"] if i % 2 else world["orgadmin"], legacy_action="login")
    many, response = _queries_for_changelist(
        client, {"action": "login", "org": str(world["org"].pk)} if who == "superuser" else {"action": "login"}
    )
    with request_scope(response):
        assert len(response.context["cl"].result_list) == 50
    assert many == few, (few, many)
    assert many <= 12


def test_no_full_count_on_the_changelist(client, world):
    client.force_login(world["superuser"])
    with CaptureQueriesContext(connection) as ctx:
        client.get(reverse(CHANGELIST))
    counts = [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]
    # Only the capped count (a subquery with LIMIT) is allowed.
    assert all("LIMIT" in sql.upper() for sql in counts), counts


AUDIT_FILTERS = {
    "unfiltered": {},
    "action": {"action": "login"},
    "failed": {"success__exact": "0"},
    "succeeded": {"success__exact": "1"},
    "since a day": {"timestamp__gte": "2000-01-01"},
    "search IP": {"q": "192.0.2.10"},
    "search email": {"q": "alice@acme.test"},
}


@pytest.mark.parametrize("label", list(AUDIT_FILTERS))
def test_every_filter_runs_a_constant_number_of_queries_past_the_exact_count(client, world, label, monkeypatch):
    """Above the exact-count limit (lowered here to 10) each filter and search still runs the
    same queries however many rows match, and the count shown is the exact one where the
    backend counts within its budget (SQLite, MariaDB) or PostgreSQL's planner estimate."""
    from agentforge_site.paginator import EstimatedCountPaginator
    from security.models import AuditLog

    monkeypatch.setattr(EstimatedCountPaginator, "exact_limit", 10)
    params = dict(AUDIT_FILTERS[label], org=str(world["org"].pk))
    client.force_login(world["superuser"])
    counts = []
    for _ in range(2):
        for i in range(60):
            make_audit(
                world["org"], actor=world["alice"], legacy_action="login", remote_addr="192.0.2.10", success=bool(i % 3)
            )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE audit_logs")
        queries, response = _queries_for_changelist(client, params)
        counts.append(queries)
    assert counts[0] == counts[1] <= 10, counts
    with request_scope(response):
        matching = response.context["cl"].queryset.count()
    shown = response.context["cl"].paginator.count
    if connection.vendor == "postgresql" and matching > 10:
        assert 10 < shown <= AuditLog.all_orgs.count() * 2  # an estimate, never below the exact floor
    else:
        assert shown == matching


@pytest.mark.backends("mysql")
def test_mariadb_count_past_its_time_budget_gives_the_estimate(world):
    """A count the server cannot finish within the budget is interrupted, not waited for, and
    the optimizer's estimate (rows × filtered of EXPLAIN) is shown instead."""
    import json
    import time

    from agentforge_site.paginator import EstimatedCountPaginator
    from security.models import AuditLog

    for _ in range(30):
        make_audit(world["org"], actor=world["alice"])
    slow = AuditLog.all_orgs.filter(org=world["org"]).extra(where=["SLEEP(0.02) = 0"])  # 0.6 s to count
    paginator = EstimatedCountPaginator(slow.order_by("-timestamp"), 50)
    paginator.exact_limit, paginator.count_budget = 5, 0.1
    start = time.monotonic()
    count = paginator.count
    assert time.monotonic() - start < 0.5  # the capped count sleeps 6 × 0.02 s, then at most 0.1 s
    sql, params = slow.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN FORMAT=JSON " + sql, params)
        block = json.loads(cursor.fetchone()[0])["query_block"]
    table = (block.get("nested_loop") or [block])[0]["table"]
    assert count == max(6, int(table["rows"] * float(table.get("filtered", 100)) / 100))


@pytest.mark.parametrize(
    "url, params",
    [
        (CHANGELIST, {"action": "\x00"}),
        (CHANGELIST, {"q": "x\x00y"}),
        (CHANGELIST, {"success__exact": "1\x00"}),
        ("admin:agents_agent_changelist", {"q": "\x00"}),
        ("admin:autocomplete", {"app_label": "agents", "model_name": "agent", "field_name": "owner", "term": "\x00"}),
    ],
)
def test_a_nul_byte_in_a_filter_search_or_autocomplete_is_a_400(client, world, url, params):
    client.force_login(world["superuser"])
    response = client.get(reverse(url), params)
    assert response.status_code == 400
    assert (
        client.get(reverse(url), {k: v.replace("\x00", "") for k, v in params.items() if k != "action"}).status_code
        == 200
    )
