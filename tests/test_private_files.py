"""Files holding secrets are private whatever the umask: exports, backups, the SQLite database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connections
from django.db.backends.sqlite3.base import DatabaseWrapper

from agentforge_site.dbconfig import build_database
from operations.backup import backup_database
from tests.legacy_helpers import run_export


@pytest.fixture
def open_umask():
    """The laxest umask: nothing but our own modes keeps files private."""
    old = os.umask(0)
    yield
    os.umask(old)


def modes(root: Path) -> dict:
    return {str(p.relative_to(root)): oct(p.stat().st_mode & 0o777) for p in [root, *root.rglob("*")]}


@pytest.mark.django_db
def test_export_json_is_0600_files_in_0700_directories(make_org, tmp_path, open_umask):
    from agentforge_agents.models import Tool
    from agentforge_core.tenancy import org_scope

    org = make_org()
    with org_scope(org):
        Tool.objects.create(type="api", name="Weather", credentials={"api_key": "sk-live-123"})
    out = tmp_path / "export" / "nested"
    run_export(out)
    found = modes(out)
    assert "tools.json" in found and "security/users.json" in found
    assert {mode for name, mode in found.items() if (out / name).is_dir()} == {"0o700"}
    assert {mode for name, mode in found.items() if (out / name).is_file()} == {"0o600"}
    assert oct((tmp_path / "export").stat().st_mode & 0o777) == "0o700"


@pytest.mark.django_db
def test_a_backup_directory_the_project_creates_is_0700(make_org, tmp_path, open_umask):
    make_org()
    path = backup_database(str(tmp_path / "new" / "backups" / "db.backup"), method="portable")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert oct((tmp_path / "new").stat().st_mode & 0o777) == "0o700"


@pytest.mark.django_db
def test_the_sqlite_database_and_its_wal_are_0600(tmp_path, open_umask):
    settings_dict = build_database({"DB_TYPE": "sqlite", "SQLITE_PATH": str(tmp_path / "agentforge.db")}, tmp_path)
    settings_dict = connections.configure_settings({"default": settings_dict})["default"]
    wrapper = DatabaseWrapper(settings_dict, alias="private")
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("CREATE TABLE t (x TEXT)")
            cursor.execute("INSERT INTO t VALUES ('secret')")
        found = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    finally:
        wrapper.close()
    assert found["agentforge.db"] == "0o600"
    assert found["agentforge.db-wal"] == "0o600" and found["agentforge.db-shm"] == "0o600"


@pytest.mark.once
def test_an_interrupt_inside_fdopen_is_the_interrupt_not_ebadf(tmp_path, monkeypatch):
    """fdopen() closes the descriptor itself when it fails half-way; open_private used to close
    it again, so an interrupt there ended in 'Bad file descriptor' instead of itself."""
    from agentforge_site import files

    real_fdopen = os.fdopen

    def interrupted(fd, *args, **kwargs):
        real_fdopen(fd, *args, **kwargs).close()  # what io.open does with what it built
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "fdopen", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.open_private(tmp_path / "secret")
