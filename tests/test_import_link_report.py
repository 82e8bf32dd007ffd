"""import_json's report of links between organizations: it names the rows the import wrote
around the ORM's checks, and on PostgreSQL leaves to the database the links its composite
tenant keys check at COMMIT (legacy.migration.importer.links_checked_at_commit)."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from legacy.migration.importer import ImportOptions, import_directory, links_checked_at_commit

pytestmark = pytest.mark.django_db

TS = "2026-01-10T12:00:00.123456"


def _write(root, relative, data):
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2))


def _user(uid, org):
    return {
        "id": uid,
        "org_id": org,
        "email": f"{uid}@example.com",
        "password_hash": None,
        "profile": {"first_name": uid, "last_name": "X"},
        "role_ids": [],
        "created_at": TS,
        "updated_at": TS,
    }


def _entry(eid, org, user):
    return {
        "id": eid,
        "org_id": org,
        "user_id": user,
        "user_email": f"{user}@example.com",
        "user_name": user,
        "session_id": None,
        "action": "login",
        "resource_type": "user",
        "resource_id": None,
        "resource_name": None,
        "details": {"n": 1},
        "changes": None,
        "ip_address": "10.0.0.1",
        "user_agent": "test",
        "request_id": None,
        "request_path": None,
        "request_method": None,
        "success": True,
        "error_message": None,
        "timestamp": TS,
    }


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipeline", "one-process"])
def test_an_audit_entry_naming_another_organizations_user_is_reported(settings, tmp_path, pipelined):
    """Audit entries keep their actor across organizations (AgentForge logged whoever acted);
    no database key checks that link on any backend, so the report must find it."""
    settings.LEGACY_IMPORT_PIPELINE = pipelined
    settings.LEGACY_IMPORT_PIPELINE_MIN_BYTES = 0
    orgs = {
        key: {"id": key, "name": key, "slug": key.replace("_", "-"), "created_at": TS, "updated_at": TS}
        for key in ("org_default", "org_b")
    }
    _write(tmp_path, "security/organizations.json", orgs)
    _write(tmp_path, "security/users.json", {"u-a": _user("u-a", "org_default"), "u-b": _user("u-b", "org_b")})
    _write(
        tmp_path,
        "security/audit_logs.json",
        [_entry("e-1", "org_default", "u-a"), _entry("e-2", "org_default", "u-b"), _entry("e-3", "org_b", "u-b")],
    )
    report = import_directory(tmp_path, ImportOptions())
    assert ("security/audit_logs.json" in report.pipelined) is pipelined, report.pipeline_fallbacks
    found = [w for w in report.warnings if "another organization" in w]
    assert len(found) == 1, report.warnings
    assert (
        found[0].startswith("audit_logs: record e-2: actor: refers to ") and "a row of another organization" in found[0]
    )


@pytest.mark.backends("postgresql")
def test_postgresql_leaves_the_links_its_composite_keys_check_to_them():
    checked = links_checked_at_commit()
    assert ("messages", "conversation_id") in checked and ("conversations", "user_id") in checked
    assert ("audit_logs", "actor_id") not in checked  # no database key: the report queries it


@pytest.mark.backends("sqlite", "mysql")
def test_elsewhere_every_link_is_queried():
    # MariaDB imports with FOREIGN_KEY_CHECKS = 0; SQLite has no composite keys
    assert links_checked_at_commit() == set()


@pytest.mark.backends("postgresql")
@pytest.mark.django_db(transaction=True)  # the owner role's own connection, outside a transaction
def test_a_composite_key_whose_triggers_are_disabled_is_queried_again():
    from accounts.rls import owner_connection

    assert ("messages", "conversation_id") in links_checked_at_commit()
    with owner_connection(connection) as switched, connection.cursor() as cursor:
        assert switched
        cursor.execute('ALTER TABLE "messages" DISABLE TRIGGER ALL')
        try:
            assert ("messages", "conversation_id") not in links_checked_at_commit()
        finally:
            cursor.execute('ALTER TABLE "messages" ENABLE TRIGGER ALL')
    assert ("messages", "conversation_id") in links_checked_at_commit()
