"""PostgreSQL statistics that tell the planner a tenant link decides its row's organization
(accounts.tenant_schema.link_statistics_statements says why)."""

from django.db import migrations

from accounts.tenant_schema import AddTenantLinkStatistics


class Migration(migrations.Migration):
    dependencies = [("operations", "0002_row_level_security")]

    operations = [AddTenantLinkStatistics()]
