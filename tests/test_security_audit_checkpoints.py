"""Signed checkpoints, the retention purge and what an attacker with database write access can
no longer hide: rewrites with recomputed hashes, truncation, deleted chains, an old backup."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from accounts.models import Organization
from agentforge_core.crypto import parse_signing_key, parse_verify_key, public_key_text
from agentforge_core.tenancy import org_scope
from agentforge_site.dbconfig import ConfigurationError
from security import audit, checkpoints
from security.models import AuditChainHead, AuditLog
from tests.test_security_audit import verify_command_fails_at

# PostgreSQL: the application role the tests run as cannot turn the append-only trigger off;
# the administrator's edits (dba) come from the owner's own connection, which sees only
# committed rows, so the tests commit theirs there.
pytestmark = pytest.mark.django_db(transaction=django_settings.DB_TYPE == "postgresql")


@pytest.fixture
def signing(settings, tmp_path):
    key = Ed25519PrivateKey.generate()
    settings.AUDIT_SIGNING_KEY = key
    settings.AUDIT_VERIFY_KEY = None
    settings.AUDIT_CHECKPOINT_DIR = str(tmp_path / "checkpoints")
    # Checkpoints only where a test asks (PostgreSQL's tests commit: no interval checkpoint
    # may slip in after each commit).
    settings.AUDIT_CHECKPOINT_INTERVAL = 0
    return key


def entries(org_id):
    return list(AuditLog.all_orgs.filter(org_id=org_id).order_by("id"))


def add_agents(org, n):
    from agentforge_agents.models import Agent

    with org_scope(org):
        for i in range(n):
            Agent.objects.create(name=f"agent {i}")


def dba(sql, params=()):
    """A statement as the database's administrator runs it (PostgreSQL: the owner, triggers off)."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        return
    import psycopg

    owner = connection.settings_dict.get("MIGRATION_USER") or connection.settings_dict["USER"]
    params_ = {k: v for k, v in connection.get_connection_params().items() if k in ("host", "port", "dbname")}
    with psycopg.connect(
        **params_, user=owner, password=connection.settings_dict.get("MIGRATION_PASSWORD") or None
    ) as owner_conn:
        owner_conn.execute("SET LOCAL session_replication_role = replica")
        owner_conn.execute(sql, params)


def recompute_everything(org_id):
    """What an attacker who edited rows does next: recompute every hash and the chain head."""
    head = AuditChainHead.objects.get(chain_key=str(org_id))
    prev = head.anchor_hash
    for entry in entries(org_id):
        new = audit.compute_hash(entry, prev)
        dba("UPDATE audit_logs SET prev_hash = %s, entry_hash = %s WHERE id = %s", [prev, new, entry.pk])
        prev = new
    last = entries(org_id)[-1].pk if entries(org_id) else head.anchor_id
    dba("UPDATE audit_chain_heads SET last_id = %s, last_hash = %s WHERE chain_key = %s", [last, prev, str(org_id)])


def lines(settings, org):
    path = checkpoints.CheckpointStore(settings.AUDIT_CHECKPOINT_DIR).path(str(org.pk))
    return path, path.read_text().splitlines()


def test_a_rewrite_with_recomputed_hashes_passes_the_chain_but_not_the_checkpoint(make_org, signing, settings):
    org = make_org()
    add_agents(org, 3)
    checkpoint = audit.checkpoint_chain(org)
    assert (checkpoint.seq, checkpoint.count, checkpoint.last_id) == (1, 4, entries(org.pk)[-1].pk)
    victim = entries(org.pk)[1]
    dba("UPDATE audit_logs SET object_repr = %s WHERE id = %s", ["forged", victim.pk])
    recompute_everything(org.pk)
    settings.AUDIT_SIGNING_KEY = None  # without checkpoints the forgery is invisible
    assert audit.verify_chain(org).ok
    settings.AUDIT_VERIFY_KEY = signing.public_key()  # a verifier holds only the public key
    report = audit.verify_chain(org)
    assert report.broken_id == checkpoint.last_id and "rewritten" in report.reason
    verify_command_fails_at(org, checkpoint.last_id)


def test_truncation_with_a_forged_head_is_reported(make_org, signing):
    org = make_org()
    add_agents(org, 3)
    audit.checkpoint_chain(org)
    keep = entries(org.pk)[:2]
    dba(
        "DELETE FROM audit_logs WHERE org_id = %s AND id > %s",
        [org.pk.hex if connection.vendor != "postgresql" else org.pk, keep[-1].pk],
    )
    dba(
        "UPDATE audit_chain_heads SET last_id = %s, last_hash = %s WHERE chain_key = %s",
        [keep[-1].pk, keep[-1].entry_hash, str(org.pk)],
    )
    report = audit.verify_chain(org)
    assert not report.ok
    assert report.reason.startswith("2 entries where signed checkpoint #1") and "counts 4" in report.reason


def test_a_deleted_chain_is_reported_by_verify_all(make_org, signing):
    org, other = make_org(), make_org()
    add_agents(org, 2)
    audit.checkpoint_chain(org)
    audit.checkpoint_chain(other)
    value = org.pk.hex if connection.vendor != "postgresql" else org.pk
    dba("DELETE FROM audit_logs WHERE org_id = %s", [value])
    dba("DELETE FROM audit_chain_heads WHERE chain_key = %s", [str(org.pk)])
    reports = {r.chain: r for r in audit.verify_all()}
    assert reports[str(other.pk)].ok
    assert "0 entries where signed checkpoint #1" in reports[str(org.pk)].reason
    with pytest.raises(CommandError, match="1 audit chain"):
        call_command("verify_audit_log", stdout=io.StringIO())


def test_an_older_backup_restored_is_reported(make_org, signing):
    """Backup at checkpoint 1; more entries and checkpoint 2; the backup comes back."""
    org = make_org()
    add_agents(org, 2)
    backup = audit.checkpoint_chain(org)
    add_agents(org, 2)
    later = audit.checkpoint_chain(org)
    assert later.seq == 2 and later.count == backup.count + 2
    value = org.pk.hex if connection.vendor != "postgresql" else org.pk
    dba("DELETE FROM audit_logs WHERE org_id = %s AND id > %s", [value, backup.last_id])
    dba(
        "UPDATE audit_chain_heads SET last_id = %s, last_hash = %s WHERE chain_key = %s",
        [backup.last_id, backup.head_hash, str(org.pk)],
    )
    report = audit.verify_chain(org)
    assert "older backup" in report.reason and f"counts {later.count}" in report.reason
    # The application goes on writing after the restore: still reported, at the signed position.
    add_agents(org, 3)
    report = audit.verify_chain(org)
    assert not report.ok and "older backup" in report.reason


def test_checkpoint_files_cannot_be_forged_or_cut_in_the_middle(make_org, signing, settings):
    org = make_org()
    for n in range(3):
        add_agents(org, 1)
        audit.checkpoint_chain(org)
    path, text = lines(settings, org)
    assert [json.loads(line)["seq"] for line in text] == [1, 2, 3]
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    # An edited count.
    edited = json.loads(text[2])
    edited["count"] = 99
    path.write_text("\n".join([*text[:2], json.dumps(edited)]) + "\n")
    assert "signature does not verify" in audit.verify_chain(org).reason
    # A line signed with another key.
    other = checkpoints.CheckpointStore(str(path.parent.parent / "other"))
    forged = other.append(
        Ed25519PrivateKey.generate(),
        chain=str(org.pk),
        reason="command",
        count=1,
        last_id=1,
        head_hash="0" * 64,
        anchor_id=0,
        anchor_hash="",
    )
    path.write_text(other.path(str(org.pk)).read_text())
    assert forged.seq == 1 and "signature does not verify" in audit.verify_chain(org).reason
    # The middle line removed.
    path.write_text("\n".join([text[0], text[2]]) + "\n")
    assert "checkpoint #3 where #2 was due" in audit.verify_chain(org).reason
    with pytest.raises(checkpoints.CheckpointError, match="damaged"):
        audit.checkpoint_chain(org)


def test_checkpoint_refuses_to_sign_a_broken_chain(make_org, signing):
    org = make_org()
    add_agents(org, 2)
    audit.checkpoint_chain(org)
    add_agents(org, 1)
    newest = entries(org.pk)[-1]
    dba("UPDATE audit_logs SET object_repr = %s WHERE id = %s", ["forged", newest.pk])
    with pytest.raises(audit.AuditChainError, match=f"refusing to sign.*altered.*entry {newest.pk}"):
        audit.checkpoint_chain(org)
    # A row removed before the latest checkpoint, with the links after it mended, changes the count.
    org2 = make_org()
    add_agents(org2, 3)
    audit.checkpoint_chain(org2)
    first = entries(org2.pk)[0]
    dba("DELETE FROM audit_logs WHERE id = %s", [first.pk])
    add_agents(org2, 1)
    with pytest.raises(audit.AuditChainError, match="before the checkpoint were removed"):
        audit.checkpoint_chain(org2)


def test_a_checkpoint_is_signed_after_a_commit_once_the_interval_has_passed(
    make_org, signing, settings, django_capture_on_commit_callbacks
):
    org = make_org()
    settings.AUDIT_CHECKPOINT_INTERVAL = 3600
    audit._last_signed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        add_agents(org, 1)
    _, text = lines(settings, org)
    assert len(text) == 1 and json.loads(text[0])["reason"] == "interval"
    with django_capture_on_commit_callbacks(execute=True):
        add_agents(org, 1)
    assert len(lines(settings, org)[1]) == 1  # not due again within the hour
    audit._last_signed[str(org.pk)] -= 3601
    with django_capture_on_commit_callbacks(execute=True):
        add_agents(org, 1)
    _, text = lines(settings, org)
    assert [json.loads(line)["count"] for line in text] == [2, 4]
    assert audit.verify_chain(org).ok


def test_rechain_refuses_entries_covered_by_a_signed_checkpoint(make_org, signing):
    org = make_org()
    add_agents(org, 2)
    victim = entries(org.pk)[1]
    audit.checkpoint_chain(org)
    dba("UPDATE audit_logs SET object_repr = %s, entry_hash = '' WHERE id = %s", ["forged", victim.pk])
    with pytest.raises(CommandError, match=f"entry {victim.pk} .*covered by signed checkpoint #1"):
        call_command("rechain_audit_log", "--org", str(org.pk), "--accept", str(victim.pk), stdout=io.StringIO())


def _org_with_old_entries(days_old=400, n=3):
    """An organization whose chain starts with ``n`` entries older than the default retention."""
    org_id = uuid.uuid4()
    old = timezone.now() - dt.timedelta(days=days_old)
    with transaction.atomic():  # the entries name the organization created after them
        AuditLog.all_orgs.bulk_create(
            [
                AuditLog(org_id=org_id, action=3, legacy_action="login", timestamp=old + dt.timedelta(minutes=i))
                for i in range(n)
            ]
        )
        return Organization.objects.create(id=org_id, name=f"Old {org_id.hex[:6]}", slug=f"old-{org_id.hex[:8]}")


def test_purge_audit_log_dry_run_then_purge_keeps_a_verifiable_signed_chain(signing, settings):
    org = _org_with_old_entries()
    before = [e.pk for e in entries(org.pk)]
    assert len(before) == 4  # three old entries, then the organization's own "create"
    out = io.StringIO()
    call_command("purge_audit_log", "--dry-run", stdout=out)
    assert f"{org.name}: 3 would be deleted (retention 365 days)" in out.getvalue()
    assert [e.pk for e in entries(org.pk)] == before
    assert not lines_exist(settings, org)
    out = io.StringIO()
    call_command("purge_audit_log", stdout=out)
    assert f"{org.name}: 3 deleted (retention 365 days)" in out.getvalue()
    remaining = entries(org.pk)
    assert [e.pk for e in remaining[:1]] == before[3:]
    assert remaining[-1].additional_data["event"] == "audit_purge" and remaining[-1].additional_data["deleted"] == 3
    head = AuditChainHead.objects.get(chain_key=str(org.pk))
    assert (head.anchor_id, remaining[0].prev_hash) == (before[2], head.anchor_hash)
    _, text = lines(settings, org)
    signed = json.loads(text[-1])
    assert (signed["reason"], signed["anchor_id"], signed["count"], signed["last_id"]) == (
        "purge",
        before[2],
        1,
        before[3],
    )
    assert audit.verify_chain(org).ok
    # A second run finds nothing old.
    out = io.StringIO()
    call_command("purge_audit_log", stdout=out)
    assert f"{org.name}: 0 deleted" in out.getvalue()


def lines_exist(settings, org):
    return checkpoints.CheckpointStore(settings.AUDIT_CHECKPOINT_DIR).path(str(org.pk)).exists()


def test_purge_refuses_a_chain_that_does_not_verify(signing):
    org = _org_with_old_entries()
    victim = entries(org.pk)[0]
    dba("UPDATE audit_logs SET object_repr = %s WHERE id = %s", ["forged", victim.pk])
    with pytest.raises(CommandError, match=f"does not verify \\(entry {victim.pk}: content does not match"):
        call_command("purge_audit_log", stdout=io.StringIO())
    assert AuditLog.all_orgs.filter(pk=victim.pk).exists()


@pytest.mark.backends("postgresql")
def test_postgresql_app_role_cannot_switch_the_purge_on():
    """As the application role (not the owner, no BYPASSRLS: tests/conftest.py): the flag alone
    does not let a DELETE through, and the owner's function deletes only an old prefix of one chain."""
    org = _org_with_old_entries()
    old = entries(org.pk)
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == (False,)
    # Inside the organization's scope, so that row-level security shows the rows to delete.
    with org_scope(org):
        with pytest.raises(DatabaseError, match="DELETE refused"):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT set_config('agentforge.audit_purge', 'on', true)")
                cursor.execute("DELETE FROM audit_logs WHERE id = %s", [old[0].pk])
        with pytest.raises(DatabaseError, match="keeps less than a day"):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT agentforge_audit_purge(%s, %s, now())", [org.pk, old[-1].pk])
        with pytest.raises(DatabaseError, match="not all older"):
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT agentforge_audit_purge(%s, %s, now() - interval '2 days')", [org.pk, old[-1].pk])
        with connection.cursor() as cursor:
            cursor.execute("SELECT agentforge_audit_purge(%s, %s, now() - interval '2 days')", [org.pk, old[2].pk])
            assert cursor.fetchone()[0] == 3
    assert [e.pk for e in entries(org.pk)] == [old[3].pk]


def test_keys_are_read_from_base64_or_pem_and_a_bad_one_names_the_variable():
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    import base64

    parsed = parse_signing_key(base64.b64encode(raw).decode(), "AUDIT_SIGNING_KEY")
    assert public_key_text(parsed.public_key()) == public_key_text(key.public_key())
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    assert public_key_text(parse_verify_key(pem, "AUDIT_VERIFY_KEY")) == public_key_text(key.public_key())
    with pytest.raises(ConfigurationError, match="AUDIT_SIGNING_KEY: not an Ed25519 key"):
        parse_signing_key("c2hvcnQ=", "AUDIT_SIGNING_KEY")
    with pytest.raises(ConfigurationError, match="AUDIT_VERIFY_KEY"):
        parse_verify_key("not base64!", "AUDIT_VERIFY_KEY")


def test_checkpoint_audit_log_signs_every_chain_and_makes_keys(make_org, signing, settings):
    org = make_org()
    add_agents(org, 1)
    out = io.StringIO()
    call_command("checkpoint_audit_log", stdout=out)
    assert f"{org.pk}: checkpoint #1, 2 entries up to {entries(org.pk)[-1].pk}" in out.getvalue()
    out = io.StringIO()
    call_command("checkpoint_audit_log", "--new-key", stdout=out)
    signing_line, verify_line = out.getvalue().splitlines()
    private = parse_signing_key(signing_line.split("=", 1)[1], "AUDIT_SIGNING_KEY")
    public = parse_verify_key(verify_line.split("=", 1)[1], "AUDIT_VERIFY_KEY")
    assert public_key_text(private.public_key()) == public_key_text(public)
    settings.AUDIT_SIGNING_KEY = None
    with pytest.raises(CommandError, match="no AUDIT_SIGNING_KEY"):
        call_command("checkpoint_audit_log", "--org", str(org.pk), stdout=io.StringIO())
