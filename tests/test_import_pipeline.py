"""The import pipeline (legacy.migration.pipeline): big streamed files read and mapped in a second process.

Every corpus and sample test runs again here with the pipeline forced on for files of any
size; the tests below check that it really ran, that it stores exactly what the one-process
import stores (special characters included, on every backend), and that each way out of it
(bad data, an existing row, a duplicate id, a reader that fails) ends as without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import threading
import time

import pytest
from django.core.management.base import CommandError
from django.db import connection

from accounts.models import User
from legacy.migration import pipeline
from legacy.migration import writer as migration_writer
from legacy.migration.importer import ImportOptions, import_directory
from security.audit import verify_all
from security.models import AuditLog
from tests import legacy_corpus as C
from tests.legacy_helpers import SAMPLE, dump, rolled_back, run_import, wipe

# The whole corpus and sample suites, collected again in this module (with the fixture below).
from tests.test_import_corpus import *  # noqa: F401,F403,E402
from tests.test_import_sample import *  # noqa: F401,F403,E402

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def force_pipeline(settings, monkeypatch):
    settings.LEGACY_IMPORT_PIPELINE = True
    settings.LEGACY_IMPORT_PIPELINE_MIN_BYTES = 0
    monkeypatch.setattr(migration_writer, "COPY_ROWS_PER_WRITE", 3)  # a batch in several COPY writes


def _chains_verify():
    reports = verify_all()
    assert reports and all(r.ok for r in reports), reports


def _import(path, **options):
    return import_directory(path, ImportOptions(**options))


def _both_ways(settings, path):
    """(report, dump) with the pipeline, then (report, dump) in one process, each from a fresh
    database, its audit chains verified, and rolled back after it."""
    wipe()
    with rolled_back():
        piped = _import(path)
        piped_rows = dump(include_import_time=False)
        _chains_verify()
    settings.LEGACY_IMPORT_PIPELINE = False
    with rolled_back():
        single = _import(path)
        single_rows = dump(include_import_time=False)
        _chains_verify()
    settings.LEGACY_IMPORT_PIPELINE = True
    return piped, piped_rows, single, single_rows


def _write(root, relative, data):
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2))


@pytest.fixture
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("piped-corpus")
    C.write_corpus(root)
    return root


def test_the_corpus_goes_through_the_pipeline_and_stores_the_same_rows(settings, corpus_dir):
    piped, piped_rows, single, single_rows = _both_ways(settings, corpus_dir)
    assert piped.pipelined == ["conversations.json", "security/audit_logs.json"], piped.pipeline_fallbacks
    assert single.pipelined == []
    assert piped_rows == single_rows
    assert piped.warnings == single.warnings and piped.notes == single.notes
    for table, stats in single.stats.items():
        got = piped.stats[table]
        assert (got.created, got.updated, got.unchanged, got.skipped, got.warnings) == (
            stats.created,
            stats.updated,
            stats.unchanged,
            stats.skipped,
            stats.warnings,
        ), table


def test_the_sample_stores_the_same_rows(settings):
    piped, piped_rows, _single, single_rows = _both_ways(settings, SAMPLE)
    assert "security/audit_logs.json" in piped.pipelined
    assert piped_rows == single_rows


AWKWARD = [
    "tab\there",
    "new\nline",
    "back\\slash",
    'quote \' and "double"',
    "carriage\rreturn",
    "ctrl-z \x1a",
    "unicode é 中文 😀",
    "percent %s %(x)s",
    "\\N",
    "",
    "semi; DROP TABLE users; --",
]


def _awkward_dir(root):
    """Organization, one user and big streamed files whose text has every character that
    COPY text, SQL literals or parameters treat specially."""
    ts = "2026-01-10T12:00:00.123456"
    org = {"id": "org_default", "name": "Default Organization", "slug": "default", "created_at": ts, "updated_at": ts}
    user = {
        "id": "u-1",
        "org_id": "org_default",
        "email": "a@example.com",
        "password_hash": None,
        "profile": {"first_name": "A", "last_name": "B"},
        "role_ids": [],
        "created_at": ts,
        "updated_at": ts,
    }
    _write(root, "security/organizations.json", {"org_default": org})
    _write(root, "security/users.json", {"u-1": user})
    entries = []
    for i, text in enumerate(AWKWARD * 3):
        entries.append(
            {
                "id": f"e-{i}",
                "org_id": "org_default",
                "user_id": "u-1",
                "user_email": "a@example.com",
                "user_name": text,
                "session_id": None,
                "action": "login",
                "resource_type": "user",
                "resource_id": text or None,
                "resource_name": text,
                "details": {"text": text, text: [i, 1.5, None]},
                "changes": {"before": text} if i % 2 else None,
                "ip_address": "10.0.0.1" if i % 3 else "::ffff:10.0.0.2",
                "user_agent": text,
                "request_id": None,
                "request_path": None,
                "request_method": None,
                "success": bool(i % 2),
                "error_message": text or None,
                "timestamp": f"2026-01-{1 + i % 28:02d}T10:00:00.{i:06d}",
            }
        )
    _write(root, "security/audit_logs.json", entries)
    messages = [
        {
            "id": f"m-{i}",
            "role": "user",
            "content": text,
            "timestamp": ts,
            "tool_calls": [{"name": text}],
            "sources": [],
        }
        for i, text in enumerate(AWKWARD)
    ]
    _write(
        root,
        "conversations.json",
        {
            "c-1": {
                "id": "c-1",
                "agent_id": None,
                "user_id": "u-1",
                "title": "t\tq",
                "messages": messages,
                "created_at": ts,
                "updated_at": ts,
            }
        },
    )
    return root


def test_special_characters_are_stored_exactly(settings, tmp_path):
    root = _awkward_dir(tmp_path)
    piped, piped_rows, _single, single_rows = _both_ways(settings, root)
    assert piped.pipelined == ["conversations.json", "security/audit_logs.json"], piped.pipeline_fallbacks
    assert piped_rows == single_rows
    # and what was stored is what the file says, read back through the ORM
    _import(root)
    stored = {e.legacy_id: e for e in AuditLog.all_orgs.all()}
    for i, text in enumerate(AWKWARD):
        entry = stored[f"e-{i}"]
        assert (entry.user_agent, entry.resource_name, entry.additional_data) == (
            text,
            text,
            {"text": text, text: [i, 1.5, None]},
        )
    _chains_verify()


def test_a_reference_only_the_database_knows_is_resolved(settings, tmp_path):
    """The reader cannot ask the database; it hands such records back to the importer."""
    root = _awkward_dir(tmp_path / "first")
    users_only = tmp_path / "users"
    for name in ("security/organizations.json", "security/users.json"):
        (users_only / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, users_only / name)
    wipe()
    _import(users_only)
    (root / "security/organizations.json").unlink()
    (root / "security/users.json").unlink()
    report = _import(root)
    assert "security/audit_logs.json" in report.pipelined, report.pipeline_fallbacks
    user = User.all_orgs.get(legacy_id="u-1")
    assert AuditLog.all_orgs.filter(actor=user).count() == len(AWKWARD) * 3
    _chains_verify()


def test_a_rerun_takes_the_ordinary_path_and_changes_nothing(corpus_dir):
    wipe()
    _import(corpus_dir)
    before = dump()
    report = _import(corpus_dir)
    assert report.pipelined == []
    assert dump() == before


@pytest.mark.parametrize("where", ["beyond a batch", "within a batch"])
def test_a_repeated_id_falls_back_and_imports_like_one_process(settings, tmp_path, monkeypatch, where):
    # batches of four: the repeat lands in a later one, or right after the first copy
    monkeypatch.setattr(pipeline, "BATCH", 4)
    root = _awkward_dir(tmp_path)
    entries = json.loads((root / "security/audit_logs.json").read_text())
    entries.insert(len(entries) if where == "beyond a batch" else 1, dict(entries[0], user_agent="the later copy"))
    _write(root, "security/audit_logs.json", entries)
    piped, piped_rows, single, single_rows = _both_ways(settings, root)
    assert "security/audit_logs.json" in piped.pipeline_fallbacks
    assert "security/audit_logs.json" not in piped.pipelined
    assert piped_rows == single_rows
    output = run_import(root, verbosity=2)
    assert "Read and mapped in a second process: conversations.json" in output
    assert "security/audit_logs.json: imported in one process instead (audit_logs: " in output
    assert piped.warnings == single.warnings
    assert piped.stats["audit_logs"].created == single.stats["audit_logs"].created


def test_a_failing_reader_falls_back(settings, tmp_path, monkeypatch):
    original = pipeline.read_records

    def breaks_midway(*args, **kwargs):
        for n, item in enumerate(original(*args, **kwargs)):
            if n == 5:
                raise RuntimeError("disk on fire")
            yield item

    monkeypatch.setattr(pipeline, "read_records", breaks_midway)
    root = _awkward_dir(tmp_path)
    piped, piped_rows, _single, single_rows = _both_ways(settings, root)
    assert "disk on fire" in piped.pipeline_fallbacks["security/audit_logs.json"]
    assert piped_rows == single_rows


def test_bad_data_in_a_pipelined_file_names_file_record_and_field(tmp_path):
    root = _awkward_dir(tmp_path)
    entries = json.loads((root / "security/audit_logs.json").read_text())
    entries[20]["success"] = "yes"
    _write(root, "security/audit_logs.json", entries)
    wipe()
    with pytest.raises(CommandError) as caught:
        run_import(root, verbosity=0)
    assert "security/audit_logs.json: record e-20: success: expected true or false" in str(caught.value)
    assert User.all_orgs.count() == 0 and AuditLog.all_orgs.count() == 0


def test_the_reader_cannot_use_the_importers_connection():
    """In a forked reader every database call raises, and the importer's connection survives."""
    connection.ensure_connection()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            pipeline._forbid_database()
            try:
                User.all_orgs.exists()
                outcome = "queried"
            except pipeline.NeedsDatabase:
                outcome = "refused"
            os.write(write_fd, pickle.dumps(outcome))
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as stream:
        outcome = pickle.loads(stream.read())
    os.waitpid(pid, 0)
    assert outcome == "refused"
    with connection.cursor() as cursor:  # the importer's connection still answers
        cursor.execute("SELECT 1")
        assert cursor.fetchone()[0] == 1


def test_small_files_and_dry_runs_stay_in_one_process(settings, corpus_dir):
    wipe()
    settings.LEGACY_IMPORT_PIPELINE_MIN_BYTES = 1 << 40
    assert _import(corpus_dir).pipelined == []
    settings.LEGACY_IMPORT_PIPELINE_MIN_BYTES = 0
    assert _import(corpus_dir, dry_run=True).pipelined == []


@contextlib.contextmanager
def _handling(signum, handler):
    """``handler`` for ``signum`` inside the block, the previous one after it."""
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


@pytest.mark.once
def test_stopping_the_reader_reaps_it_even_when_an_interrupt_lands_in_the_wait(monkeypatch):
    """Ctrl-C during the importer's wait for its killed reader used to leave the reader unreaped
    (the handler raised out of waitpid): it is reaped first, then the interrupt unwinds."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the stand-in reader: ends on its own, a little later
        time.sleep(0.5)
        os._exit(0)
    monkeypatch.setattr(pipeline.os, "kill", lambda pid, sig: None)  # so the wait has to wait

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    with _handling(signal.SIGALRM, interrupt):
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            with pytest.raises(KeyboardInterrupt):
                pipeline._stop(pid)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    with pytest.raises(ChildProcessError):  # reaped: no such child any more
        os.waitpid(pid, os.WNOHANG)


@pytest.mark.parametrize("fails", [False, True], ids=["opened", "open-fails"])
def test_an_interrupt_as_the_pipe_is_opened_unwinds_as_itself(monkeypatch, corpus_dir, fails):
    """A signal landing right after fdopen() built the stream used to end the import in an
    EBADF traceback (the half-built stream closed the descriptor, then the clean-up closed it
    again), which CI caught once under load. The stream is opened while signals wait; when the
    opening fails with a signal waiting, the reader is stopped before the signal is delivered."""

    class Interrupted(Exception):
        pass

    def interrupt(signum, frame):
        raise Interrupted

    real_fdopen = os.fdopen

    def fdopen_then_signal(*args, **kwargs):
        stream = real_fdopen(*args, **kwargs)
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered here unless signals wait
        except Interrupted:
            stream.close()  # as io.open does with what it built when it fails half-way
            raise
        if fails:
            stream.close()
            raise OSError("the stream could not be set up")
        return stream

    monkeypatch.setattr(pipeline.os, "fdopen", fdopen_then_signal)
    with _handling(signal.SIGTERM, interrupt):
        wipe()
        with pytest.raises(Interrupted):
            _import(corpus_dir)
    with pytest.raises(ChildProcessError):  # the reader was reaped
        os.waitpid(-1, os.WNOHANG)


def test_an_interrupt_taken_by_another_thread_as_the_reader_forks_stops_the_reader(monkeypatch, corpus_dir):
    """Blocking SIGINT in the importing thread does not hold it back when the process has other
    threads (psycopg's pool workers on PostgreSQL): the kernel hands the signal to one of them and
    Python raises it in the importing thread at its next instruction, before the reader's pid was
    in reach of the clean-up. CI caught the reader outliving the import that way."""
    go, sent = threading.Event(), threading.Event()

    def send_sigint():  # started before the fork, so SIGINT is not blocked in this thread
        go.wait()
        os.kill(os.getpid(), signal.SIGINT)  # delivered to this thread before kill() returns
        sent.set()

    other = threading.Thread(target=send_sigint, daemon=True)
    other.start()
    real_fork = os.fork
    forked = []

    def fork_then_signal():
        pid = real_fork()
        if pid:
            forked.append(pid)
            go.set()
            sent.wait()
        return pid

    monkeypatch.setattr(pipeline.os, "fork", fork_then_signal)
    try:
        with _handling(signal.SIGINT, signal.default_int_handler):
            wipe()
            with pytest.raises(KeyboardInterrupt):
                _import(corpus_dir)
    finally:
        other.join()
    assert len(forked) == 1
    try:
        with pytest.raises(ChildProcessError):  # stopped and reaped by the import
            os.waitpid(forked[0], os.WNOHANG)
    finally:
        try:  # on failure: do not leave the orphan running
            os.kill(forked[0], signal.SIGKILL)
            os.waitpid(forked[0], 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_an_audit_row_without_some_columns_is_hashed_and_written_with_their_defaults():
    """The encoder's C hashing needs every hashed column: a row without some (a mapper that
    leaves them to their defaults) gets each default once, so the row written is the row hashed."""
    import datetime as dt

    from django.utils import timezone

    from legacy.format.mappers.base import Row
    from legacy.migration.writer import AuditChain, Writer

    writer = Writer(dry_run=True, now=timezone.now())
    chain = AuditChain(writer)
    encoder = pipeline.RowEncoder(writer.plan(AuditLog), connection.vendor, chain)
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    values = {"legacy_id": "e-1", "org_id": None, "action": 0, "timestamp": when, "legacy_action": "login"}
    payload, key, head, tail = encoder.encode(Row(AuditLog, values, key_fields=("legacy_id",)))
    assert set(chain.hasher.attnames) <= set(values)  # the defaults, filled in
    defaults = writer.plan(AuditLog).defaults
    assert values["remote_addr"] is defaults["remote_addr"]() is None
    assert (head, tail) == chain.hasher.parts(values) and key == chain.audit.chain_key(None)
    assert payload == encoder.payload(values)  # the same values written
