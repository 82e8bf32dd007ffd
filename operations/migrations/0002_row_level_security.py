"""PostgreSQL row-level security on every tenant table (see accounts/rls.py)."""

from django.db import migrations

from accounts.tenant_schema import EnableRowLevelSecurity


class Migration(migrations.Migration):
    dependencies = [("operations", "0001_tenant_composite_keys")]

    operations = [EnableRowLevelSecurity()]
