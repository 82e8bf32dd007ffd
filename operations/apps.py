from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Slow-query, failed-transaction and pool-exhaustion monitoring on every connection.
        from django.db.backends.signals import connection_created

        from agentforge_site.files import private_sqlite_files
        from operations import monitoring

        monitoring.install()
        # The SQLite database holds every secret: 0600 whatever the umask.
        connection_created.connect(private_sqlite_files, dispatch_uid="agentforge_private_sqlite")
