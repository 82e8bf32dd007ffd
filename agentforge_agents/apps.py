from django.apps import AppConfig


class AgentsConfig(AppConfig):
    # The package is not named ``agents``: that is the import name of the OpenAI Agents SDK,
    # which AgentForge's process may load beside these models. The label stays "agents"
    # (tables, migrations, permissions and admin URLs are unchanged).
    name = "agentforge_agents"
    label = "agents"
    verbose_name = "Agents"
    default_auto_field = "django.db.models.BigAutoField"
