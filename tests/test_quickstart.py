"""``scripts/quickstart``, the README's first command, run in a copy of the project as a
newcomer would: it must end with the sample imported and an admin who can sign in, and a
second run must keep the data and give the admin a new password. (It once ended in a
traceback on every fresh clone, and no test noticed.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Organization, User

ROOT = Path(__file__).resolve().parent.parent

SIGN_IN = """
import django, sys
django.setup()
from django.test import Client
from accounts.models import User
from agentforge_core.tenancy import unscoped
client = Client(HTTP_HOST="127.0.0.1:8000")  # as runserver is reached
page = client.post("/admin/login/?next=/admin/", {"username": sys.argv[1], "password": sys.argv[2]})
assert page.status_code == 302 and page.url == "/admin/", (page.status_code, page.content[:300])
for url in ("/admin/", "/admin/agents/agent/", "/admin/security/auditlog/"):
    assert client.get(url).status_code == 200, url
with unscoped():
    print(User.all_orgs.count(), User.all_orgs.filter(is_superuser=True).count())
"""


def _copy_project(target: Path) -> None:
    """The files a clone would have (tracked or new, nothing git ignores: no .env, no data/),
    with this run's .venv."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted in the working tree is still listed
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name, follow_symlinks=False)
    (target / ".venv").symlink_to(Path(sys.prefix))


def _newcomer_env(**extra) -> dict:
    """A newcomer's shell: none of this test run's DB_* settings."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8", **extra}


def _quickstart(project: Path) -> str:
    run = subprocess.run(
        ["scripts/quickstart", "--no-serve"],
        cwd=project,
        env=_newcomer_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run.stdout


def _sign_in(project: Path, email: str, password: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(project / ".venv/bin/python"), "-c", SIGN_IN, email, password],
        cwd=project,
        env=_newcomer_env(DJANGO_SETTINGS_MODULE="agentforge_site.settings"),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.backends("sqlite")  # its own SQLite database in the copy: once per test run
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="copies the project's tracked files (git ls-files)")
def test_quickstart_ends_with_an_admin_who_can_sign_in(tmp_path):
    project = tmp_path / "agentforge-db"
    project.mkdir()
    _copy_project(project)

    first = _quickstart(project)
    assert "AgentForge DB is ready." in first
    email = re.search(r"Email: +(\S+)", first).group(1)
    password = re.search(r"Password: +(\S+)", first).group(1)
    assert email == "admin@example.com"
    assert (project / ".env").is_file() and (project / "data/agentforge.db").is_file()

    signed_in = _sign_in(project, email, password)
    assert signed_in.returncode == 0, signed_in.stderr[-3000:]
    users, superusers = map(int, signed_in.stdout.split())
    assert superusers == 1 and users > 1  # the sample's users and the admin

    # Again, as the closing message says: the data is kept, the admin gets a new password.
    second = _quickstart(project)
    new_password = re.search(r"Password: +(\S+)", second).group(1)
    assert new_password != password
    assert _sign_in(project, email, password).returncode != 0
    again = _sign_in(project, email, new_password)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.split() == [str(users), "1"]


@pytest.mark.django_db
def test_ensure_superuser_takes_the_password_from_the_environment_only(monkeypatch):
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="ADMIN_PASSWORD"):
        call_command("ensure_superuser", email="root@example.com")
    assert not User.all_orgs.by_email("root@example.com").exists()

    monkeypatch.setenv("ADMIN_PASSWORD", "first-Password-1")
    call_command("ensure_superuser", email="root@example.com")
    user = User.all_orgs.by_email("root@example.com").get()
    assert user.is_superuser and user.is_staff and user.org_id == Organization.get_default().pk
    assert user.check_password("first-Password-1")

    user.is_superuser = False
    user.save()
    monkeypatch.setenv("ADMIN_PASSWORD", "second-Password-2")
    call_command("ensure_superuser", email="root@example.com")
    again = User.all_orgs.by_email("root@example.com").get()
    assert again.pk == user.pk and again.is_superuser
    assert again.check_password("second-Password-2") and not again.check_password("first-Password-1")
