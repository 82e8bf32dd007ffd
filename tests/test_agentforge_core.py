"""agentforge_core is the foundation the domain apps build on, and it builds on none of them."""

import ast
import os
import subprocess
import sys
from pathlib import Path

from django.apps import apps

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "agentforge_core"
DOMAIN_APPS = (
    "accounts",
    "security",
    "agentforge_agents",
    "knowledge",
    "conversations",
    "legacy",
    "operations",
    "settings_app",
)


def imported_modules(path: Path):
    """``(line, module)`` of every import in ``path``, those inside functions included."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module


def test_no_module_of_agentforge_core_imports_a_domain_app():
    # Function-level imports count too: a lazy import only hides the cycle.
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted(CORE.rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] in DOMAIN_APPS
    ]
    assert found == []


def test_agentforge_core_loads_with_no_domain_app_installed():
    script = f"""
import sys
import django
from django.conf import settings

settings.configure(INSTALLED_APPS=["agentforge_core"])
django.setup()
import agentforge_core.crypto, agentforge_core.fields, agentforge_core.models, agentforge_core.tenancy

print(sorted(name for name in sys.modules if name.split(".")[0] in {DOMAIN_APPS!r}))
"""
    env = {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_agentforge_core_has_no_tables():
    assert list(apps.get_app_config("agentforge_core").get_models()) == []
    assert not (CORE / "migrations").exists()
