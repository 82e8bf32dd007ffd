"""The models load inside AgentForge's own process, beside its top-level packages.

AgentForge's code is the packages ``api``, ``core``, ``database`` and ``scripts``, and it may use the
agents SDK, imported as ``agents``. None of this project's packages may take one of those names:
whichever comes first on ``sys.path`` would hide the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
HOST_PACKAGES = ("api", "core", "database", "scripts", "agents")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import agentforge_site
    agentforge_site.setup(DB_TYPE="sqlite", SQLITE_PATH=sys.argv[1])
    from django.apps import apps
    from agentforge_agents.models import Agent
    from accounts.models import Organization, User
    from conversations.models import Message
    import api, core, database, scripts, agents
    print(json.dumps({
        "host": {name: getattr(sys.modules[name], "HOST", None) for name in ("api", "core", "database", "scripts", "agents")},
        "models": sorted(m._meta.label for m in (Agent, Organization, User, Message)),
        "apps": len(apps.get_app_configs()),
    }))
    """
)


@pytest.mark.parametrize("host_first", [True, False], ids=["host packages first", "project first"])
def test_the_models_load_beside_agentforges_own_packages(tmp_path, host_first):
    host = tmp_path / "agentforge"
    for name in HOST_PACKAGES:
        (host / name).mkdir(parents=True)
        (host / name / "__init__.py").write_text(f"HOST = {name!r}\n")
    paths = [str(host), str(PROJECT_DIR)] if host_first else [str(PROJECT_DIR), str(host)]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "DJANGO_", "DATABASE_URL"))}
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        ENV_FILE="",
        SECRET_KEY="host-process-test",
        ENCRYPTION_KEY="dGVzdC1rZXktb25lLWZvci1hZ2VudGZvcmdlLXRlc3Q=",
    )
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "db.sqlite3")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["host"] == {name: name for name in HOST_PACKAGES}
    assert loaded["models"] == ["accounts.Organization", "accounts.User", "agents.Agent", "conversations.Message"]


def test_no_top_level_package_of_the_project_takes_a_host_name():
    ours = {path.parent.name for path in PROJECT_DIR.glob("*/__init__.py")}
    assert ours and not ours & set(HOST_PACKAGES), ours & set(HOST_PACKAGES)
