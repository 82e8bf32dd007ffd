from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Slow-query, failed-transaction and pool-exhaustion monitoring on every connection.
        from operations import monitoring

        monitoring.install()
        # migrate ends with fresh planner statistics (SQLite has none until asked).
        from django.db.models.signals import post_migrate

        from agentforge_site.db_statistics import optimize_after_migrate

        post_migrate.connect(optimize_after_migrate, dispatch_uid="agentforge_optimize_after_migrate")
