"""An operator's pass over import_json / export_json / verify_parity, wave 4: what an operator
does that the format tests do not (interrupting an import, two at once, odd things in the data
directory, a disk that fills during an export, wrong arguments).

The contract for anything wrong: one line naming the file (and the record), a non-zero exit,
nothing lost or half-written. Real exit codes and signals need a real process: those tests run
``manage.py`` against the test database (committed rows, ``transactional_db``) as the
application role (PostgreSQL: under row-level security, the import through its bypass role).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from agentforge_agents.models import Agent
from agentforge_core.tenancy import unscoped
from tests import legacy_corpus as C
from tests.legacy_helpers import SAMPLE, dump, run_export, run_import

PROJECT = Path(__file__).resolve().parent.parent
ROLLED_BACK = " (nothing was imported: the transaction was rolled back)"
AUDIT_ENTRIES = 12_000  # keeps the import's reader process busy for a good fraction of a second


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    C.write_corpus(root)
    return root


@pytest.fixture
def copy(corpus, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(corpus, target)
    return target


def _refused(target, expected: str, **options) -> None:
    before = dump()
    with pytest.raises(CommandError) as caught:
        run_import(target, verbosity=0, **options)
    assert str(caught.value) == expected
    assert dump() == before


# --- what is in the data directory ------------------------------------------------------------


def _directory(root):
    (root / "agents.json").unlink()
    (root / "agents.json").mkdir()


def _broken_link(root):
    (root / "agents.json").unlink()
    (root / "agents.json").symlink_to("nowhere.json")


def _fifo(root):
    (root / "agents.json").unlink()
    os.mkfifo(root / "agents.json")


def _security_file(root):
    shutil.rmtree(root / "security")
    (root / "security").write_text("{}")


def _lab_file(root):
    shutil.rmtree(root / "lab")
    (root / "lab").write_text("{}")


def _lab_directory(root):
    (root / "lab" / "x.json").mkdir()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "spoil, message",
    [
        (_directory, "agents.json: a directory where a file should be; refused"),
        (_broken_link, "agents.json: a broken symbolic link (to nowhere.json); refused"),
        (_fifo, "agents.json: not a regular file (a FIFO, socket or device); refused"),
        (_security_file, "security/organizations.json: security/ is not a directory"),
        (_lab_file, "lab/: not a directory; refused"),
        (_lab_directory, "lab/x.json: a directory where a file should be; refused"),
    ],
    ids=["directory", "broken-link", "fifo", "security-is-a-file", "lab-is-a-file", "directory-in-lab"],
)
def test_something_else_in_a_legacy_files_place_is_refused_not_skipped(copy, spoil, message):
    """Skipping it imported no agents (or no security data) and reported success."""
    spoil(copy)
    _refused(copy, message + ROLLED_BACK)


@pytest.mark.django_db
def test_check_lists_a_refused_file_once(copy):
    _directory(copy)
    out = run_import_check(copy)
    assert out.count("agents.json: a directory where a file should be; refused") == 1
    assert Agent.all_orgs.count() == 0


def run_import_check(target) -> str:
    import io

    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("import_json", str(target), check=True, stdout=out)
    assert str(caught.value) == "1 problem(s) would block the import (see above)."
    return out.getvalue()


@pytest.mark.django_db
def test_a_link_to_a_file_inside_the_directory_is_followed(copy):
    (copy / "agents.json").rename(copy / "agents-real.json")
    (copy / "agents.json").symlink_to("agents-real.json")
    run_import(copy, verbosity=0)
    with unscoped():
        assert Agent.all_orgs.count() == len(json.loads((copy / "agents-real.json").read_text()))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "relative, message",
    [
        ("agents.json", "agents.json: file is empty (expected an object)"),
        ("security/audit_logs.json", "security/audit_logs.json: file is empty (expected a list)"),
        ("settings.json", "settings.json: malformed JSON at line 1, column 1: Expecting value"),
    ],
)
def test_a_zero_byte_file_is_refused(copy, relative, message):
    (copy / relative).write_bytes(b"")
    _refused(copy, message + ROLLED_BACK)


# --- --dry-run and --check leave the database as it was ---------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("option", ["dry_run", "check"])
def test_dry_run_and_check_write_nothing_into_a_database_that_holds_an_import(copy, option):
    run_import(copy, verbosity=0)
    agents = json.loads((copy / "agents.json").read_text())
    first = next(iter(agents))
    agents[first]["name"] = "renamed since the import"
    (copy / "agents.json").write_text(json.dumps(agents, indent=2))
    users = json.loads((copy / "security" / "users.json").read_text())
    users["99999999-9999-4999-8999-999999999999"] = dict(
        users[C.U2], id="99999999-9999-4999-8999-999999999999", email="new.since@example.com"
    )
    (copy / "security" / "users.json").write_text(json.dumps(users, indent=2, ensure_ascii=False))
    before = dump()
    output = run_import(copy, verbosity=1, **{option: True})
    assert dump() == before
    assert "(counts are what an import would do)" in output


ANOTHER_INSTALL = (
    "security/users.json: none of its users is one an earlier import wrote into this database: if this is "
    "another AgentForge install, its records are merging into this database's organizations (org_default among them)"
)


@pytest.mark.django_db
def test_importing_another_install_into_the_same_database_says_it_merges(tmp_path):
    # Every install's default organization is org_default: a second install's files merged into the
    # first one's organizations without a word. Its users are the tell: a re-run knows them.
    first = run_import(SAMPLE, verbosity=2)
    assert ANOTHER_INSTALL not in first
    assert ANOTHER_INSTALL not in run_import(SAMPLE, verbosity=2)
    other = tmp_path / "other-install"
    shutil.copytree(SAMPLE, other)
    users = json.loads((other / "security" / "users.json").read_text(encoding="utf-8"))
    renames = {key: f"{i:08d}-0000-4000-8000-00000000000{i}" for i, key in enumerate(users)}
    renames |= {user["email"]: f"other{i}@install.test" for i, user in enumerate(users.values())}
    for path in other.rglob("*.json"):
        text = path.read_text(encoding="utf-8")
        for old, new in renames.items():
            text = text.replace(old, new)
        path.write_text(text, encoding="utf-8")
    assert ANOTHER_INSTALL in run_import(other, verbosity=2)


# --- export_json: a failed export leaves every file whole ---------------------------------------


class _FillsUp:
    """A file whose disk fills after ``room`` characters (what ENOSPC does to a write)."""

    def __init__(self, fh, room):
        self.fh, self.room = fh, room

    def write(self, text):
        self.room -= len(text)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.fh.write(text)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


@pytest.mark.django_db
@pytest.mark.parametrize("victim", ["conversations.json", "settings.json"])
def test_a_disk_full_export_leaves_the_previous_files_whole(copy, tmp_path, monkeypatch, victim):
    """A streamed file (conversations) and a whole-object one (settings): the previous export
    stays byte for byte, no temporary file is left, one line names the file."""
    from legacy.format import jsonio

    run_import(copy, verbosity=0)
    out = tmp_path / "export"
    run_export(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real_open = jsonio.open_private

    def open_private(path, mode="w"):
        fh = real_open(path, mode)
        return _FillsUp(fh, 50) if Path(path) == out / (victim + ".tmp") else fh

    monkeypatch.setattr(jsonio, "open_private", open_private)
    with pytest.raises(CommandError) as caught:
        run_export(out)
    assert str(caught.value) == f"{out / victim}: No space left on device"
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.django_db
def test_an_export_into_a_path_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(CommandError) as caught:
        run_export(tmp_path / "file" / "out")
    assert str(caught.value) == f"{tmp_path / 'file' / 'out'}: Not a directory"


# --- real processes: exit codes, signals, two imports at once ----------------------------------


def _env() -> dict:
    name = str(connection.settings_dict["NAME"])
    return dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.settings",
        DB_NAME=name,
        SQLITE_PATH=name,
        LEGACY_IMPORT_PIPELINE_MIN_BYTES="0",
        DB_SLOW_QUERY_MS="600000",  # no slow-query lines on stderr from a busy machine
    )


def _manage(*args, env=None):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _start_import(data_dir):
    return subprocess.Popen(
        [sys.executable, "manage.py", "import_json", str(data_dir), "-v0"],
        cwd=PROJECT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as an operator's terminal delivers it: a test run started in the background by
        # a script (scripts/test runs the backends side by side) inherits SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _reader_of(process) -> int:
    """The pid of the import's forked reader process, once it runs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        if pids:
            return int(pids[0])
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)
    raise AssertionError("the reader process never started")


@pytest.fixture
def big_dir(tmp_path):
    """The real sample with AUDIT_ENTRIES more audit entries (read by the forked reader)."""
    target = tmp_path / "big"
    shutil.copytree(SAMPLE, target)
    path = target / "security" / "audit_logs.json"
    entries = json.loads(path.read_text(encoding="utf-8"))
    template = entries[0]
    for i in range(AUDIT_ENTRIES):
        entries.append(
            dict(
                template,
                id="%08x-2222-4000-8000-%012x" % (i // 1000, i),
                timestamp="2026-03-01T00:00:00.%06d" % i,
                details={"i": i},
            )
        )
    path.write_text(json.dumps(entries), encoding="utf-8")
    return target


def _counts():
    from accounts.models import User
    from security.models import AuditLog

    with unscoped():
        return AuditLog.all_orgs.count(), User.all_orgs.count()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_import_interrupted_while_the_reader_runs_writes_nothing_and_a_rerun_completes(big_dir, signum, code):
    importer = _start_import(big_dir)
    reader = _reader_of(importer)
    os.kill(importer.pid, signum)
    _, err = importer.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert (importer.returncode, err) == (
        code,
        f"CommandError: interrupted by {name}; nothing was imported (the transaction was rolled back)\n",
    )
    assert not Path(f"/proc/{reader}").exists()  # stopped and reaped, not orphaned
    assert _counts() == (0, 0)

    rerun = _manage("import_json", str(big_dir), "-v0")
    assert (rerun.returncode, rerun.stderr) == (0, "")
    assert _counts() == (29 + AUDIT_ENTRIES, 5)


@pytest.mark.django_db(transaction=True)
def test_a_second_import_while_one_runs_is_refused_at_once(big_dir):
    first = _start_import(big_dir)
    reader = _reader_of(first)
    # Held inside its transaction (the importer waits for its stopped reader) while the second one
    # starts: on a fast machine the first used to commit before the second reached the lock.
    os.kill(reader, signal.SIGSTOP)
    try:
        second = _manage("import_json", str(big_dir), "-v0")
    finally:
        os.kill(reader, signal.SIGCONT)
    assert (second.returncode, second.stderr) == (
        1,
        f"CommandError: {BUSY}\n",
    )
    _, err = first.communicate(timeout=300)
    assert (first.returncode, err) == (0, "")
    assert _counts() == (29 + AUDIT_ENTRIES, 5)  # one import's rows, nothing twice or interleaved


BUSY = (
    "another import is writing to this database (import_json, or verify_parity --fix-from json); "
    "wait for it to end, then run again"
)


@pytest.mark.django_db(transaction=True)
def test_a_repair_from_the_files_is_refused_while_an_import_runs():
    """verify_parity --fix-from json writes the database as an import does: it takes the same lock."""
    from legacy.migration.importer import one_import_at_a_time

    with one_import_at_a_time():  # held by this test's own session, as a running import holds it
        repair = _manage("verify_parity", "--data-dir", str(SAMPLE), "--fix-from", "json", "-v0")
    assert (repair.returncode, repair.stderr) == (1, f"CommandError: {BUSY}\n")


@pytest.mark.once
@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, code, line",
    [
        (["import_json", "/nonexistent-agentforge"], 1, "CommandError: /nonexistent-agentforge: not a directory"),
        (["import_json", "--bogus"], 2, "manage.py import_json: error: unrecognized arguments: --bogus"),
        (
            ["import_json", "sample-data", "--database", "other"],
            2,
            "manage.py import_json: error: unrecognized arguments: --database other",
        ),
        (["export_json"], 2, "manage.py export_json: error: the following arguments are required: out_dir"),
        (
            ["verify_parity", "--data-dir", "/nonexistent-agentforge"],
            1,
            "CommandError: legacy data directory /nonexistent-agentforge does not exist "
            "(set LEGACY_DATA_DIR or --data-dir)",
        ),
        (
            ["verify_parity", "--fix-from", "both"],
            2,
            "manage.py verify_parity: error: argument --fix-from: invalid choice: 'both' (choose from 'json', 'db')",
        ),
    ],
    ids=["import-missing-dir", "import-unknown-option", "import-database", "export-no-dir", "parity-dir", "parity-fix"],
)
def test_wrong_arguments_are_one_line_and_a_non_zero_exit(args, code, line):
    done = _manage(*args)
    assert (done.returncode, done.stderr) == (code, line + "\n")


# --- export while the application writes -------------------------------------------------------


@pytest.fixture
def second_connection(transactional_db):
    """Another connection to the test database: the application (the dual-write store) writing
    while export_json runs."""
    from django.db import connections

    other = connections.create_connection("default")
    other.alias = "application"
    connections["application"] = other
    try:
        yield "application"
    finally:
        other.close()
        if hasattr(other, "close_pool"):  # PostgreSQL's psycopg pool holds its own sessions
            other.close_pool()
        del connections["application"]


def test_an_export_reads_every_table_as_of_one_moment(copy, tmp_path, monkeypatch, second_connection):
    """The application renames every agent and adds a conversation right after tools.json is
    written: the export shows the moment it began (the old names, the conversations then), not
    tools of one moment beside agents of the next."""
    from conversations.models import Conversation
    from legacy.format import jsonio

    run_import(copy, verbosity=0)
    with unscoped():
        names = dict(Agent.all_orgs.values_list("legacy_id", "name"))
        conversations = set(Conversation.all_orgs.values_list("legacy_id", flat=True))
    real_close = jsonio.JSONWriter.close

    def close(writer):
        real_close(writer)
        if writer.path.name == "tools.json":  # update(): no signals, so nothing on this connection
            with unscoped():
                Agent.all_orgs.using(second_connection).update(name="renamed during the export")
                Conversation.all_orgs.using(second_connection).update(title="retitled during the export")

    monkeypatch.setattr(jsonio.JSONWriter, "close", close)
    out = tmp_path / "export"
    run_export(out)
    exported = json.loads((out / "agents.json").read_text())
    assert {agent["id"]: agent["name"] for agent in exported.values()} == names
    titles = {c["title"] for c in json.loads((out / "conversations.json").read_text()).values()}
    assert len(conversations) > 0 and "retitled during the export" not in titles
    with unscoped():  # the application's writes are there, for the next export
        assert set(Agent.all_orgs.values_list("name", flat=True)) == {"renamed during the export"}
