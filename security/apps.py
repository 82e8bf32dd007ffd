from django.apps import AppConfig


class SecurityConfig(AppConfig):
    name = "security"
    verbose_name = "Security"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from security.audit import hold_auditlog_reads_to_active_org, register_models

        register_models()
        hold_auditlog_reads_to_active_org()
