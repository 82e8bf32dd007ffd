"""AgentForge DB: the database layer of AgentForge.

AgentForge's own application (FastAPI, scripts) calls :func:`setup` once before
importing any model::

    import agentforge_site
    agentforge_site.setup()                      # DB_* etc. from the environment or .env
    # or: agentforge_site.setup(DB_TYPE="postgresql", DB_HOST="db", DB_NAME="agentforge")

    from agentforge_core.tenancy import org_scope
    from agentforge_agents.models import Agent

    with org_scope(org_id):                      # sync code
        Agent.objects.filter(status="published").count()

    async def handler(org_id):                   # async code (Django's async ORM)
        with org_scope(org_id):
            return [a async for a in Agent.objects.all()]

Tenant models fail closed: a query run with no organization active raises
``agentforge_core.tenancy.OrgScopeError``; ``Model.all_orgs`` is the unscoped manager for
system work. Outside a request, Django does not close database connections for you:
a long-running process should call ``django.db.close_old_connections()`` between units
of work (with persistent connections, CONN_MAX_AGE > 0).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PROJECT_DIR = Path(__file__).resolve().parent.parent


def load_env_file() -> None:
    """Read ``.env`` (or ``ENV_FILE``) into the environment; variables already set win."""
    import environ

    env_file = os.environ.get("ENV_FILE", str(_PROJECT_DIR / ".env"))
    if env_file and os.path.isfile(env_file):
        environ.Env.read_env(env_file, overwrite=False)


def setup(env_file: str | None = None, **environment: str) -> None:
    """Configure Django from the environment (or ``env_file``) for use outside a web server.

    Keyword arguments are set as environment variables first (``DB_TYPE="postgresql"``);
    the process environment otherwise wins over the ``.env`` file. Safe to call more
    than once; once Django is configured, asking for different settings raises
    ImproperlyConfigured rather than being silently ignored.
    """
    import django
    from django.apps import apps
    from django.core.exceptions import ImproperlyConfigured

    values = {name: str(value) for name, value in environment.items()}
    if env_file is not None:
        values["ENV_FILE"] = str(env_file)
    if apps.ready:
        changed = sorted(name for name, value in values.items() if os.environ.get(name) != value)
        if changed:
            raise ImproperlyConfigured(
                f"agentforge_site.setup() already ran in this process; {', '.join(changed)} can no longer change"
            )
        return
    os.environ.update(values)
    if str(_PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(_PROJECT_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentforge_site.settings")
    django.setup()
