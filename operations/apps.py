from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        from accounts import rls, tenant_schema
        from agentforge_site import caching
        from agentforge_site.db_statistics import optimize_after_migrate
        from agentforge_site.files import private_sqlite_files
        from operations import monitoring

        # Slow-query, failed-transaction and pool-exhaustion monitoring on every connection.
        monitoring.install()
        # Cached reads are invalidated by every write to the tables they depend on.
        caching.install()
        # migrate ends with fresh planner statistics (SQLite has none until asked).
        post_migrate.connect(optimize_after_migrate, dispatch_uid="agentforge_optimize_after_migrate")
        # The SQLite database holds every secret: 0600 whatever the umask.
        connection_created.connect(private_sqlite_files, dispatch_uid="agentforge_private_sqlite")
        # PostgreSQL row-level security: each statement's transaction names its organization.
        # Installed after the monitor, so its wrapper is the inner one: the transaction it opens
        # around a statement closes before the monitor records a slow query in a transaction
        # of its own.
        rls.install()
        tenant_schema.install()  # MariaDB: Django's loaddata checks leave the composite keys alone
