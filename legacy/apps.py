from django.apps import AppConfig


class LegacyConfig(AppConfig):
    name = "legacy"
    verbose_name = "Legacy JSON data"
    default_auto_field = "django.db.models.BigAutoField"
