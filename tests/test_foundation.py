"""The project on a fresh database of the configured backend: migrated, consistent, reachable."""

import io

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection


@pytest.mark.django_db
def test_check_connection_reports_backend_version_latency_pool_and_migrations():
    out = io.StringIO()
    call_command("check_connection", stdout=out)
    text = out.getvalue()
    expected_backend = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB"}[settings.DB_TYPE]
    assert f"backend:     {expected_backend}" in text
    assert "latency:" in text and " ms" in text
    assert "0 pending" in text
    assert text.rstrip().endswith("OK")
    if settings.DB_TYPE == "postgresql":
        assert "kind=psycopg pool" in text


@pytest.mark.django_db
def test_check_connection_json_counts_applied_migrations():
    import json

    out = io.StringIO()
    call_command("check_connection", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["ok"] is True and report["pending_migrations"] == []
    assert report["applied_migrations"] >= 20  # auditlog's own migrations are off (MIGRATION_MODULES)
    assert report["latency_ms"] >= 0


@pytest.mark.django_db
def test_models_and_migrations_agree():
    # Raises SystemExit(1) when a model change has no migration.
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db
def test_backend_session_settings_are_in_force():
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone()[0] == "wal"  # the test database is a file, as in production
            cursor.execute("PRAGMA foreign_keys")
            assert cursor.fetchone()[0] == 1
        elif connection.vendor == "mysql":
            cursor.execute("SELECT @@sql_mode, @@character_set_connection")
            sql_mode, charset = cursor.fetchone()
            assert "STRICT_TRANS_TABLES" in sql_mode and charset == "utf8mb4"
        elif connection.vendor == "postgresql":
            cursor.execute("SHOW application_name")
            assert cursor.fetchone()[0] == "agentforge-db"


@pytest.mark.django_db
def test_check_connection_fail_on_pending_exits_non_zero_only_when_a_migration_is_pending():
    from django.core.management import CommandError
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader
    from django.db.migrations.recorder import MigrationRecorder

    call_command("check_connection", "--fail-on-pending", stdout=io.StringIO())  # nothing pending: no error
    # Forget one applied migration that nothing depends on (rolled back with the test's
    # transaction): it alone is pending again.
    app, name = MigrationLoader(connection).graph.leaf_nodes()[0]
    MigrationRecorder.Migration.objects.filter(app=app, name=name).delete()
    out = io.StringIO()
    with pytest.raises(CommandError, match="^1 migrations pending: run python manage.py migrate$"):
        call_command("check_connection", "--fail-on-pending", stdout=out)
    assert f"  pending: {app}.{name}" in out.getvalue()
    call_command("check_connection", stdout=io.StringIO())  # without the flag: a report, no error
