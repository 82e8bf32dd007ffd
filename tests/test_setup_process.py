"""AgentForge is a separate Python program: ``agentforge_site.setup()`` must be all it needs
to use the models, sync and async, with organization scoping, outside any web server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.once  # its processes use their own SQLite files

PROJECT_DIR = Path(__file__).resolve().parent.parent

MIGRATE = """
import agentforge_site
agentforge_site.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
print("migrated")
"""

AGENTFORGE = """
import asyncio, json, sys

import agentforge_site

agentforge_site.setup(DB_TYPE="sqlite", SQLITE_PATH=sys.argv[1])
agentforge_site.setup()  # a second call is harmless

from django.conf import settings
from accounts.models import Organization
from agentforge_core.tenancy import OrgScopeError, current_org, org_scope
from agentforge_agents.models import Agent

out = {"database": str(settings.DATABASES["default"]["NAME"])}
org = Organization.all_orgs.create(name="Plain process", slug="plain-process", legacy_id="org_plain")
other = Organization.all_orgs.create(name="Other", slug="other")
with org_scope(other):
    Agent.objects.create(name="not mine")

with org_scope(org):
    agent = Agent.objects.create(name="sync")
    out["sync_agent_in_org"] = agent.org_id == org.pk
    out["sync_count"] = Agent.objects.count()

try:
    Agent.objects.count()
    out["no_scope"] = "returned rows"
except OrgScopeError:
    out["no_scope"] = "OrgScopeError"


@org_scope("org_plain")
async def decorated():
    return sorted([a.name async for a in Agent.objects.all()])


async def main():
    with org_scope(org):
        created = await Agent.objects.acreate(name="async")
        out["async_agent_in_org"] = created.org_id == org.pk
        out["async_count"] = await Agent.objects.acount()
    out["decorated"] = await decorated()
    try:
        await Agent.objects.acount()
        out["async_no_scope"] = "returned rows"
    except OrgScopeError:
        out["async_no_scope"] = "OrgScopeError"
    out["scope_after"] = current_org()


asyncio.run(main())
out["total_rows"] = Agent.all_orgs.count()
print(json.dumps(out))
"""


def _run(code, env, cwd, *args):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_setup_from_a_plain_python_process(tmp_path):
    db_path = tmp_path / "agentforge.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DJANGO_", "SQLITE_"))}
    env.update(
        PYTHONPATH=str(PROJECT_DIR),
        ENV_FILE="",  # no developer .env
        SECRET_KEY="setup-process-test-secret",
        ENCRYPTION_KEY=os.environ["ENCRYPTION_KEY"],
        DEBUG="false",
    )
    # The first process migrates from the environment alone...
    assert _run(MIGRATE, {**env, "DB_TYPE": "sqlite", "SQLITE_PATH": str(db_path)}, tmp_path) == "migrated"
    assert db_path.stat().st_size > 0

    # ...the second, like AgentForge, passes its database to setup() and uses the models.
    out = json.loads(_run(AGENTFORGE, env, tmp_path, str(db_path)))
    assert out == {
        "database": str(db_path),
        "sync_agent_in_org": True,
        "sync_count": 1,
        "no_scope": "OrgScopeError",
        "async_agent_in_org": True,
        "async_count": 2,
        "decorated": ["async", "sync"],
        "async_no_scope": "OrgScopeError",
        "scope_after": None,
        "total_rows": 3,
    }


def test_setup_names_a_missing_secret_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DJANGO_", "SQLITE_", "SECRET_KEY"))}
    env.update(
        PYTHONPATH=str(PROJECT_DIR),
        ENV_FILE="",
        DEBUG="false",
        DB_TYPE="sqlite",
        SQLITE_PATH=str(tmp_path / "x.sqlite3"),
    )
    result = subprocess.run(
        [sys.executable, "-c", "import agentforge_site; agentforge_site.setup()"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY: is required when DEBUG is off" in result.stderr


def test_setup_after_django_is_configured():
    # pytest-django already configured Django: a plain call is a no-op, but asking for
    # another database is refused instead of being silently ignored.
    from django.apps import apps
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    import agentforge_site

    before = settings.DATABASES["default"]["NAME"]
    agentforge_site.setup()
    agentforge_site.setup(SECRET_KEY=os.environ["SECRET_KEY"])  # the same value: fine
    assert apps.ready
    assert settings.DATABASES["default"]["NAME"] == before
    db_type = os.environ.get("DB_TYPE")
    with pytest.raises(ImproperlyConfigured, match="DB_TYPE"):
        agentforge_site.setup(DB_TYPE="oracle" if settings.DB_TYPE != "oracle" else "sqlite")
    assert os.environ.get("DB_TYPE") == db_type
