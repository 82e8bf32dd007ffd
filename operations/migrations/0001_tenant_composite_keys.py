"""Unique (org_id, id) on every tenant table and composite foreign keys between tenant tables
(PostgreSQL, MariaDB/MySQL), so the database refuses a link that crosses organizations."""

from django.db import migrations

from accounts.tenant_schema import AddTenantCompositeKeys


class Migration(migrations.Migration):
    # After the last migration of every app that owns a tenant table.
    dependencies = [
        ("accounts", "0002_user_scoped_manager"),
        ("agents", "0002_tool_permission_tool_name_null"),
        ("conversations", "0002_messages_fewer_indexes"),
        ("knowledge", "0003_chunk_fulltext"),
        ("legacy", "0002_legacy_record_secret"),
        ("security", "0005_audit_success_index"),
        ("settings_app", "0001_initial"),
    ]

    operations = [AddTenantCompositeKeys()]
