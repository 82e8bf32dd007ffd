"""``scripts/test`` sets itself up: from a fresh copy of the repository (no .venv) it builds the
virtualenv and starts the servers, and a second time installs nothing; with no root and no sudo
it names what is missing, still runs SQLite, and exits non-zero."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.backends("sqlite")  # it runs its own scripts/test: once per suite run is enough


def fresh_copy(dest: Path) -> Path:
    """The repository's files as a clone has them: tracked and new, nothing ignored (no .venv, no data/)."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=PROJECT_DIR, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = PROJECT_DIR / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def clean_env(**extra) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DB_", "DATABASE_URL", "DJANGO_", "SQLITE_", "VIRTUAL_ENV", "PYTEST_"))
    }
    env.pop("PYTHON", None)
    env.update(extra)
    return env


# One quick test (no database to create) stands for "the suite runs": what is checked here is
# how scripts/test sets up and reports, not the tests it runs.
QUICK_TEST = "tests/test_tenancy.py::test_manage_py_check_refuses_an_unscoped_tenant_model"


@pytest.mark.skipif(
    os.environ.get("CI") == "true",
    reason=".ci/run builds a fresh clone's virtualenv itself, as its first step: twice is minutes",
)
def test_a_fresh_copy_builds_its_virtualenv_and_starts_the_servers(tmp_path):
    repo = fresh_copy(tmp_path / "clone")
    assert not (repo / ".venv").exists()
    first = subprocess.run(
        ["scripts/test", "--setup-only"], cwd=repo, env=clean_env(), capture_output=True, text=True, timeout=900
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "=== set-up done in" in first.stdout
    stamp = repo / ".venv" / ".requirements.sha256"
    assert stamp.read_text().strip() == hashlib.sha256((repo / "requirements.lock").read_bytes()).hexdigest()
    drivers = subprocess.run(
        [str(repo / ".venv/bin/python"), "-c", "import django, psycopg, MySQLdb, pytest"],
        capture_output=True,
        text=True,
    )
    assert drivers.returncode == 0, drivers.stderr

    # A second set-up installs nothing again, and the copy's suite runs with its own .venv.
    before = stamp.stat().st_mtime_ns
    second = subprocess.run(
        ["scripts/test", "sqlite", "-q", QUICK_TEST],
        cwd=repo,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert stamp.stat().st_mtime_ns == before
    assert " passed" in second.stdout and "=== sqlite: passed ===" in second.stdout


def test_a_set_up_virtualenv_is_not_installed_again(tmp_path):
    repo = fresh_copy(tmp_path / "clone")
    (repo / ".venv").symlink_to(PROJECT_DIR / ".venv")  # built, stamped with this requirements.lock
    stamp = repo / ".venv" / ".requirements.sha256"
    assert stamp.read_text().strip() == hashlib.sha256((repo / "requirements.lock").read_bytes()).hexdigest()
    before = stamp.stat().st_mtime_ns
    result = subprocess.run(
        ["scripts/test", "--setup-only"], cwd=repo, env=clean_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "=== set-up done in" in result.stdout
    assert stamp.stat().st_mtime_ns == before  # pip would have run, and the stamp been rewritten


def test_without_root_or_sudo_it_names_what_is_missing_runs_sqlite_and_fails(tmp_path):
    repo = fresh_copy(tmp_path / "clone")
    # The copy borrows this checkout's virtualenv (same requirements, so nothing is reinstalled).
    (repo / ".venv").symlink_to(PROJECT_DIR / ".venv")
    # A PATH with no sudo, as an ordinary user (uid 1000), on which the PostgreSQL server package
    # is not installed.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "id": '#!/bin/sh\ncase "$1" in -u) echo 1000;; -un) echo builder;; *) exec /usr/bin/id "$@";; esac\n',
        "dpkg-query": '#!/bin/sh\nfor last; do :; done\n[ "$last" = postgresql ] && exit 1\nexec /usr/bin/dpkg-query "$@"\n',
    }
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for tool in (
        "bash",
        "env",
        "sh",
        "grep",
        "cat",
        "cut",
        "sha256sum",
        "dirname",
        "mkdir",
        "date",
        "rm",
        "sleep",
        "seq",
        "ls",
        "pg_isready",
        "psql",
        "createdb",
        "mysql",
        "mysqladmin",
        "redis-cli",
        "pg_lsclusters",
    ):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    assert shutil.which("sudo", path=str(bin_dir)) is None

    result = subprocess.run(
        ["scripts/test", "sqlite", "-q", QUICK_TEST],
        cwd=repo,
        env=clean_env(PATH=str(bin_dir)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out[-3000:]
    assert "missing Debian packages: postgresql\n" in result.stderr
    assert "install them as root: apt-get install -y --no-install-recommends postgresql\n" in result.stderr
    assert "=== sqlite: passed ===" in result.stdout, out[-3000:]
    assert result.stdout.rstrip().endswith("=== incomplete set-up: Debian packages missing (see above) ===")
