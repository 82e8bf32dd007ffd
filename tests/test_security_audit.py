"""The audit trail: registration, context, append-only, hash chain, verification, purge."""

import datetime as dt
import io
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

from agentforge_core.tenancy import org_scope, unscoped
from security import audit
from security.models import AuditLog, AuditLogImmutableError


def entries(org):
    return list(AuditLog.all_orgs.filter(org_id=org.pk).order_by("id"))


def verify_command_fails_at(org, entry_id) -> str:
    """``verify_audit_log --org`` exits non-zero naming ``entry_id``; returns its output."""
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("verify_audit_log", "--org", str(org.pk), stdout=out)
    assert f"BROKEN at entry {entry_id}" in out.getvalue()
    return out.getvalue()


@pytest.mark.django_db
def test_model_changes_are_audited_with_org_and_chain(make_org):
    from agentforge_agents.models import Tool

    org = make_org()
    with org_scope(org):
        tool = Tool.objects.create(type="api", name="Weather", credentials={"api_key": "sk-live-123"})
        tool.name = "Weather 2"
        tool.save()
        tool.delete()
    rows = [e for e in entries(org) if e.resource_type == "tool"]
    assert [e.legacy_action for e in rows] == ["create", "update", "delete"]
    assert all(e.org_id == org.pk for e in rows)
    # The encrypted field is excluded from the diff, not masked.
    for e in rows:
        assert "credentials" not in (e.changes or {})
        assert "sk-live" not in str(e.changes)
    assert rows[1].changes["name"] == ["Weather", "Weather 2"]
    # Chained: each entry points at the previous one of the organization.
    chain = entries(org)
    for before, after in zip(chain, chain[1:]):
        assert after.prev_hash == before.entry_hash
    assert all(len(e.entry_hash) == 64 for e in chain)
    assert audit.verify_chain(org).ok


@pytest.mark.django_db
def test_orm_refuses_update_and_delete(make_org):
    org = make_org()
    entry = AuditLog.all_orgs.filter(org_id=org.pk).first()
    assert entry is not None  # the organization's own "create"
    entry.object_repr = "changed"
    with pytest.raises(AuditLogImmutableError):
        entry.save()
    with pytest.raises(AuditLogImmutableError):
        entry.delete()
    with pytest.raises(AuditLogImmutableError):
        AuditLog.all_orgs.filter(pk=entry.pk).update(object_repr="x")
    with pytest.raises(AuditLogImmutableError):
        AuditLog.all_orgs.filter(pk=entry.pk).delete()
    with pytest.raises(AuditLogImmutableError):
        AuditLog._base_manager.filter(pk=entry.pk).delete()
    assert AuditLog.all_orgs.get(pk=entry.pk).object_repr != "changed"


def _raw_update(entry_id, value):
    table = connection.ops.quote_name("audit_logs")
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET object_repr = %s WHERE id = %s", [value, entry_id])


@pytest.mark.django_db
@pytest.mark.backends("sqlite", "mysql")
def test_edited_row_is_detected_by_verify_audit_log(make_org):
    org = make_org()
    with org_scope(org):
        from agentforge_agents.models import Agent

        for n in range(3):
            Agent.objects.create(name=f"Agent {n}")
    chain = entries(org)
    call_command("verify_audit_log", "--org", str(org.pk), stdout=io.StringIO())
    victim = chain[2]
    _raw_update(victim.pk, "forged")
    assert "altered" in verify_command_fails_at(org, victim.pk)
    # All chains at once also fails.
    with pytest.raises(CommandError):
        call_command("verify_audit_log", stdout=io.StringIO())


@pytest.mark.django_db
@pytest.mark.backends("sqlite", "mysql")
def test_removed_rows_are_detected(make_org):
    org = make_org()
    from agentforge_agents.models import Agent

    with org_scope(org):
        for n in range(4):
            Agent.objects.create(name=f"Agent {n}")
    chain = entries(org)
    table = connection.ops.quote_name("audit_logs")
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [chain[1].pk])
    report = audit.verify_chain(org)
    assert report.broken_id == chain[2].pk and "removed" in report.reason
    # Removing the newest entry is caught by the chain head.
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [chain[-1].pk])
    report = audit.verify_chain(org)
    assert not report.ok


@pytest.mark.django_db
@pytest.mark.backends("postgresql")
def test_postgresql_trigger_rejects_raw_update_and_delete(make_org):
    from django.db import DatabaseError

    org = make_org()
    entry = entries(org)[0]
    table = connection.ops.quote_name("audit_logs")
    for sql, params in (
        (f"UPDATE {table} SET object_repr = %s WHERE id = %s", ["forged", entry.pk]),
        (f"UPDATE {table} SET entry_hash = %s WHERE id = %s", ["0" * 64, entry.pk]),
        (f"DELETE FROM {table} WHERE id = %s", [entry.pk]),
    ):
        # Inside the organization's scope, so row-level security lets the statement see the row.
        with pytest.raises(DatabaseError, match="append-only"):
            with org_scope(org), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, params)
    assert AuditLog.all_orgs.get(pk=entry.pk).entry_hash == entry.entry_hash


@pytest.mark.django_db
def test_bulk_inserted_legacy_entries_are_chained(make_org):
    org = make_org()
    from agentforge_agents.models import Agent

    with org_scope(org):
        Agent.objects.create(name="before")
    legacy = [
        AuditLog(
            org_id=org.pk,
            action=3,
            legacy_action="login",
            legacy_id=str(uuid.uuid4()),
            timestamp=timezone.now() - dt.timedelta(days=30 - n),
            remote_addr="127.0.0.1",
            additional_data={"remember_me": True, "n": n},
            changes=None,
        )
        for n in range(5)
    ]
    AuditLog.all_orgs.bulk_create(legacy)
    assert all(e.entry_hash for e in entries(org))
    assert audit.verify_chain(org).ok
    # An append after the import continues the chain; rechain again changes nothing.
    with org_scope(org):
        Agent.objects.create(name="after")
    assert audit.rechain(org_id=org.pk) == 0
    assert audit.rechain() == 0
    assert audit.verify_chain(org).ok


def _insert_unhashed(org, **fields):
    """A row written around the application (raw INSERT), as an attacker or a buggy bulk path would."""
    from django.db.models import QuerySet

    QuerySet.bulk_create(AuditLog.all_orgs.all(), [AuditLog(org_id=org.pk, action=3, legacy_action="logout", **fields)])
    return AuditLog.all_orgs.filter(org_id=org.pk).order_by("-id").first()


@pytest.mark.django_db
def test_an_entry_without_a_hash_is_reported_and_never_chained_by_later_writes(make_org, make_user):
    from agentforge_agents.models import Agent

    org = make_org()
    raw = _insert_unhashed(org, object_repr="forged sign-out")
    assert raw.entry_hash == ""
    # A sign-in and an admin edit after it append to the chain head, around the raw row.
    audit.record_auth_event("login", user=make_user(org))
    with org_scope(org):
        Agent.objects.create(name="a")
    assert AuditLog.all_orgs.get(pk=raw.pk).entry_hash == ""
    report = audit.verify_chain(org)
    assert report.broken_id == raw.pk and "no hash" in report.reason
    verify_command_fails_at(org, raw.pk)


@pytest.mark.django_db
def test_rechain_audit_log_refuses_unnamed_and_altered_entries_and_is_audited(make_org):
    from agentforge_agents.models import Agent

    org = make_org()
    raw = _insert_unhashed(org)
    with org_scope(org):
        Agent.objects.create(name="after the raw row")
    hashes = dict(AuditLog.all_orgs.filter(org_id=org.pk).values_list("id", "entry_hash"))
    # Without naming the entry, nothing is hashed.
    with pytest.raises(CommandError, match=f"entry {raw.pk} .*has no hash"):
        call_command("rechain_audit_log", "--org", str(org.pk), stdout=io.StringIO())
    assert dict(AuditLog.all_orgs.filter(org_id=org.pk).values_list("id", "entry_hash")) == hashes
    # Named after checking it: adopted, the entry after it re-linked, and the repair recorded.
    out = io.StringIO()
    call_command("rechain_audit_log", "--org", str(org.pk), "--accept", str(raw.pk), stdout=out)
    assert out.getvalue().strip() == "2 entries hashed or re-linked"
    assert audit.verify_chain(org).ok
    last = entries(org)[-1]
    assert last.additional_data == {"event": "audit_rechain", "adopted": [raw.pk], "relinked": 1}
    # Nothing left to do: no change and no new entry.
    call_command("rechain_audit_log", "--org", str(org.pk), stdout=io.StringIO())
    assert entries(org)[-1].pk == last.pk


@pytest.mark.django_db
@pytest.mark.backends("sqlite", "mysql")
def test_rechain_refuses_an_edited_entry_whose_hash_was_blanked_unless_named(make_org):
    """The forgery of the issue: edit a row, blank its hash; rechain does not bless it."""
    from agentforge_agents.models import Agent

    org = make_org()
    with org_scope(org):
        Agent.objects.create(name="a")
        Agent.objects.create(name="b")
    victim = entries(org)[1]
    table = connection.ops.quote_name("audit_logs")
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET object_repr = %s, entry_hash = '' WHERE id = %s", ["forged", victim.pk])
    with pytest.raises(audit.AuditChainError, match=f"entry {victim.pk} .*has no hash"):
        audit.rechain(org_id=org.pk)
    with pytest.raises(audit.AuditChainError, match=f"entry {victim.pk} .*has no hash"):
        audit.rechain()
    assert AuditLog.all_orgs.get(pk=victim.pk).entry_hash == ""
    assert audit.verify_chain(org).broken_id == victim.pk
    # A row altered with its hash kept is refused even when named.
    other = entries(org)[2]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET object_repr = %s WHERE id = %s", ["forged too", other.pk])
    with pytest.raises(audit.AuditChainError, match=f"entry {other.pk} .*altered"):
        audit.rechain(org_id=org.pk, accept=[victim.pk, other.pk])


@pytest.mark.django_db
def test_org_delete_keeps_entries(make_org):
    org = make_org()
    org_id = org.pk
    with unscoped():
        org.delete()
    assert AuditLog.all_orgs.filter(org_id=org_id).count() >= 2
    assert audit.verify_chain(org_id).ok


@pytest.mark.django_db(transaction=True)
@pytest.mark.backends("postgresql")
def test_postgresql_edit_with_trigger_disabled_is_still_detected(make_org):
    """A database owner can disable the trigger; the chain still shows the edit. The
    application's role cannot (tests connect as it: tests/conftest.py)."""
    import psycopg
    from django.db import DatabaseError

    from agentforge_agents.models import Agent

    org = make_org()
    with org_scope(org):
        Agent.objects.create(name="a")
    victim = entries(org)[-1]
    with pytest.raises(DatabaseError, match="permission denied"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
    owner = connection.settings_dict.get("MIGRATION_USER") or connection.settings_dict["USER"]
    params = {k: v for k, v in connection.get_connection_params().items() if k in ("host", "port", "dbname")}
    with psycopg.connect(
        **params, user=owner, password=connection.settings_dict.get("MIGRATION_PASSWORD") or None
    ) as owner_conn:
        owner_conn.execute("SET LOCAL session_replication_role = replica")  # superuser: triggers off
        owner_conn.execute("UPDATE audit_logs SET object_repr = %s WHERE id = %s", ["forged", victim.pk])
    verify_command_fails_at(org, victim.pk)


@pytest.mark.django_db
def test_auditlog_admin_search_by_actor_email(make_org, make_user, client):
    """django-auditlog's LogEntryAdmin search fields work with our user model, and so does ours."""
    from auditlog.admin import LogEntryAdmin
    from django.contrib.admin.sites import AdminSite
    from django.test import RequestFactory

    org = make_org()
    user = make_user(
        org, email="searcher@example.com", first_name="Sea", last_name="Rcher", is_staff=True, is_superuser=True
    )
    audit.record_auth_event("login", user=user)
    request = RequestFactory().get("/admin/security/auditlog/", {"q": "searcher@"})
    request.user = user
    model_admin = LogEntryAdmin(AuditLog, AdminSite())
    for term in ("searcher@example", "Rcher", "Sea"):
        found, _ = model_admin.get_search_results(request, AuditLog.all_orgs.all(), term)
        assert found.filter(legacy_action="login", actor=user).exists(), term
    client.force_login(user)
    response = client.get("/admin/security/auditlog/", {"q": "searcher@example.com"})
    assert response.status_code == 200
    assert b"searcher@example.com" in response.content


@pytest.mark.django_db(transaction=True)
@pytest.mark.backends("postgresql", "mysql")
def test_concurrent_appends_keep_one_chain(make_org):
    """Writers in parallel transactions serialise on the chain head: no forks."""
    import threading

    from django.db import connections

    from agentforge_agents.models import Agent

    org = make_org()
    errors = []

    def work(n):
        try:
            for i in range(5):
                with org_scope(org), transaction.atomic():
                    Agent.objects.create(name=f"agent {n}-{i}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert AuditLog.all_orgs.filter(org_id=org.pk, resource_type="agent").count() == 20
    report = audit.verify_chain(org)
    assert report.ok, report


@pytest.mark.once
def test_holding_auditlog_reads_refuses_a_django_auditlog_without_its_reader(monkeypatch):
    """The hold replaces a private django-auditlog function: an upgrade that renames it must stop
    start-up, not leave auditlog reading other organizations' rows through the base manager."""
    import auditlog.receivers
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.delattr(auditlog.receivers, "_get_manager_from_settings")
    with pytest.raises(ImproperlyConfigured, match="auditlog.receivers._get_manager_from_settings is gone"):
        audit.hold_auditlog_reads_to_active_org()
