from django.apps import AppConfig


class AgentforgeCoreConfig(AppConfig):
    """The foundation every domain app builds on and that builds on none of them: organization
    scoping (tenancy, the abstract models and their managers), encryption at rest (crypto,
    encrypted fields). No concrete models, no migrations."""

    name = "agentforge_core"
    label = "agentforge_core"
    verbose_name = "AgentForge core"
