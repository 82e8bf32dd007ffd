from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from accounts import checks  # noqa: F401 - registers the tenant-model check
        from accounts.models.base import scope_relation_accessors

        scope_relation_accessors()
