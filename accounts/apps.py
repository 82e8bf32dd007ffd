from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # PostgreSQL: every statement's transaction names its organization (row-level security).
        from accounts import rls

        rls.install()
