from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Slow-query, failed-transaction and pool-exhaustion monitoring on every connection.
        from operations import monitoring

        monitoring.install()
