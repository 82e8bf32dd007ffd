from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Slow-query, failed-transaction and pool-exhaustion monitoring on every connection.
        from accounts import rls, tenant_schema
        from operations import monitoring

        monitoring.install()
        # PostgreSQL row-level security: each statement's transaction names its organization.
        # Installed after the monitor, so its wrapper is the inner one: the transaction it opens
        # around a statement closes before the monitor records a slow query in a transaction
        # of its own.
        rls.install()
        tenant_schema.install()  # MariaDB: Django's loaddata checks leave the composite keys alone
