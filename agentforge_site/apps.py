from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    """``django.contrib.admin`` with :class:`agentforge_site.admin.site.AgentForgeAdminSite` as ``admin.site``."""

    default_site = "agentforge_site.admin.site.AgentForgeAdminSite"
