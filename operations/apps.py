from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Slow-query, failed-transaction and pool-exhaustion monitoring on every connection.
        from accounts import rls
        from operations import monitoring

        monitoring.install()
        # migrate ends with fresh planner statistics (SQLite has none until asked).
        from django.db.models.signals import post_migrate

        from agentforge_site.db_statistics import optimize_after_migrate

        post_migrate.connect(optimize_after_migrate, dispatch_uid="agentforge_optimize_after_migrate")
        # PostgreSQL row-level security: each statement's transaction names its organization.
        # Installed after the monitor, so its wrapper is the inner one: the transaction it opens
        # around a statement closes before the monitor records a slow query in a transaction
        # of its own.
        rls.install()
