"""Unique (org_id, id) on every tenant table and composite foreign keys between tenant tables
(PostgreSQL, MariaDB/MySQL), so the database refuses a link that crosses organizations."""

from django.db import migrations

from accounts.tenant_schema import AddTenantCompositeKeys


class Migration(migrations.Migration):
    # After the last migration of every app that owns a tenant table.
    dependencies = [
        ("accounts", "0001_initial"),
        ("agents", "0001_initial"),
        ("conversations", "0002_messages_fewer_indexes"),
        ("knowledge", "0001_initial"),
        ("legacy", "0001_initial"),
        ("security", "0003_audit_logs_fewer_indexes"),
        ("settings_app", "0001_initial"),
    ]

    operations = [AddTenantCompositeKeys()]
