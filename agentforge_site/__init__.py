"""AgentForge DB: the database layer of AgentForge.

AgentForge's own application (FastAPI, scripts) calls :func:`setup` once before
importing any model::

    import agentforge_site
    agentforge_site.setup()
    from agents.models import Agent
    from accounts.tenancy import org_scope
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PROJECT_DIR = Path(__file__).resolve().parent.parent


def setup(env_file: str | None = None, **environment: str) -> None:
    """Configure Django from the environment (or ``env_file``) for use outside a web server.

    Keyword arguments are set as environment variables first (``DB_TYPE="postgresql"``).
    Safe to call more than once.
    """
    import django
    from django.apps import apps

    for name, value in environment.items():
        os.environ[name] = str(value)
    if env_file:
        os.environ["ENV_FILE"] = str(env_file)
    if str(_PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(_PROJECT_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentforge_site.settings")
    if not apps.ready:
        django.setup()
