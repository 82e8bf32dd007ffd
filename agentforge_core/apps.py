from django.apps import AppConfig


class AgentforgeCoreConfig(AppConfig):
    """The foundation every domain app builds on and that builds on none of them: organization
    scoping (tenancy, the abstract models and their managers), encryption at rest (crypto,
    encrypted fields). No concrete models, no migrations."""

    name = "agentforge_core"
    label = "agentforge_core"
    verbose_name = "AgentForge core"

    def ready(self):
        from django.db.models.signals import pre_save

        from agentforge_core.models import (
            check_raw_save,
            hold_django_reads_to_active_org,
            hold_global_joins_to_active_org,
            scope_relation_accessors,
        )

        scope_relation_accessors()  # every app's models are loaded by now, the domain apps' included
        hold_django_reads_to_active_org()
        hold_global_joins_to_active_org()
        pre_save.connect(check_raw_save, dispatch_uid="agentforge_core.check_raw_save")
