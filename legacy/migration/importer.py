"""``import_directory(path, options) -> ImportReport``: the engine behind ``import_json``.

One transaction, all or nothing. Small files are loaded whole (their ids are needed to
check references); the big ones (audit logs, conversations, documents, scraped pages,
chunk index) are streamed record by record and written in batches (see legacy.migration.writer),
so memory stays flat whatever their size.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from django.db import connection, transaction

from accounts.models import (
    Organization,
    Permission,
    User,
    normalize_email_address,
)
from agentforge_core.tenancy import unscoped
from agentforge_site.caching import bump
from agentforge_site.db_statistics import refresh_statistics
from agentforge_site.replicas import primary_only
from legacy.format.collections import LEGACY_COLLECTIONS, file_label
from legacy.format.errors import LegacyDataError
from legacy.format.jsonio import legacy_file, read_records
from legacy.format.mappers import Context, lab, registry
from legacy.format.mappers.accounts import permission_codes
from legacy.migration import pipeline
from legacy.migration.writer import CaseTwinError, Stats, Writer
from legacy.models import LegacyRecord

MAX_WARNINGS_KEPT = 200


class ImportAborted(Exception):
    """The import stopped on bad data; ``report`` has what was found (nothing was written)."""

    def __init__(self, error: LegacyDataError, report: "ImportReport"):
        self.error = error
        self.report = report
        super().__init__(str(error))


@dataclass
class ImportOptions:
    dry_run: bool = False
    skip_existing: bool = False
    check: bool = False
    backup: bool = False
    progress: Callable[[str, int], None] | None = None


@dataclass
class ImportReport:
    data_dir: str = ""
    stats: dict = field(default_factory=dict)  # table -> Stats
    warnings: list = field(default_factory=list)  # first messages
    warning_counts: Counter = field(default_factory=Counter)  # collection -> count
    notes: Counter = field(default_factory=Counter)  # normalisation -> count
    not_imported: dict = field(default_factory=dict)  # what has no home -> count
    errors: list = field(default_factory=list)  # --check: blocking problems
    differences: dict = field(default_factory=dict)  # --check: table -> [(key, fields)]
    files: list = field(default_factory=list)
    records: Counter = field(default_factory=Counter)  # collection -> records read
    pipelined: list = field(default_factory=list)  # files read and mapped in a second process
    pipeline_fallbacks: dict = field(default_factory=dict)  # file -> why it was imported in one process
    backup_path: str | None = None
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def rows_written(self) -> int:
        return sum(s.created + s.updated for s in self.stats.values())

    @property
    def total_warnings(self) -> int:
        return sum(self.warning_counts.values())

    def warn(self, collection: str, message: str) -> None:
        self.warning_counts[collection] += 1
        if len(self.warnings) < MAX_WARNINGS_KEPT:
            self.warnings.append(message)


def _backup() -> str:
    from operations.backup import backup_database

    return str(backup_database())


@primary_only()
def import_directory(path, options: ImportOptions | None = None) -> ImportReport:
    # Streaming allocates a few dozen containers per record while a batch of 2,000 stays
    # alive; with the default gen-0 threshold (700) the collector runs every ~20 records and
    # rescans the batch each time. It still runs during the import, just far less often.
    threshold = gc.get_threshold()
    gc.set_threshold(20_000, threshold[1], threshold[2])
    try:
        # System work across every organization (also the database's bypass, accounts/rls.py).
        with unscoped():
            return _import_directory(path, options)
    finally:
        gc.set_threshold(*threshold)


def _import_directory(path, options: ImportOptions | None) -> ImportReport:
    options = options or ImportOptions()
    root = Path(path)
    report = ImportReport(data_dir=str(root), dry_run=options.dry_run or options.check)
    if not root.is_dir():
        raise LegacyDataError(str(root), "is not a directory")
    started = time.monotonic()
    if options.backup and not (options.dry_run or options.check):
        report.backup_path = _backup()

    ctx = Context()
    ctx.dry_run = options.dry_run or options.check
    writer = Writer(dry_run=ctx.dry_run, skip_existing=options.skip_existing, now=ctx.now, check=options.check)

    def fail(error: LegacyDataError):
        if options.check:
            report.errors.append(str(error))
        else:
            raise ImportAborted(error, report)

    # Which legacy files are there; one refused (a directory, a broken link) is reported once.
    present: dict[str, Path] = {}
    for collection, mapper in registry.items():
        try:
            file_path = legacy_file(root, root / mapper.file, mapper.file)
        except LegacyDataError as exc:
            fail(exc)
            continue
        if file_path is not None:
            present[collection] = file_path

    # 1. small files, loaded whole: their ids are what references are checked against
    loaded: dict[str, object] = {}
    for collection, mapper in registry.items():
        file_path = present.get(collection)
        if mapper.stream or file_path is None:
            continue
        try:
            container = "dict" if mapper.container == "dict" else "list" if mapper.container == "list" else None
            if container:
                data = dict(read_records(file_path, mapper.file, container, stream=False))
            else:
                from legacy.format.jsonio import load_json

                data = load_json(file_path, mapper.file)
                if not isinstance(data, dict):
                    raise LegacyDataError(mapper.file, "expected an object at the top level")
        except LegacyDataError as exc:
            fail(exc)
            continue
        loaded[collection] = data
        if LEGACY_COLLECTIONS[collection].referenced:
            ctx.add_source_ids(mapper.model, mapper.source_ids(data))
    default_org = _default_organization(root, ctx)
    ctx.raw["user_groups"] = _user_groups(loaded.get("security/users"))
    # Which organization each role and user belongs to: links to another organization's are
    # kept as dangling references (the database's composite keys refuse them).
    for name, book in (
        ("security/roles", "role_orgs"),
        ("security/users", "user_orgs"),
        ("security/departments", "department_orgs"),
        ("tools", "tool_orgs"),
        ("agents", "agent_orgs"),
    ):
        ctx.raw[book] = {
            r.get("id", key): r.get("org_id") or "org_default"
            for key, r in (loaded.get(name) or {}).items()
            if isinstance(r, dict)
        }
    ctx.raw["org_ldap"] = {
        r.get("ldap_config_id")
        for r in (loaded.get("security/organizations") or {}).values()
        if isinstance(r, dict) and r.get("ldap_config_id")
    }
    for error in _duplicate_emails(loaded.get("security/users"), ctx):
        fail(error)

    with one_import_at_a_time(skip=ctx.dry_run), transaction.atomic():
        # Every organization's cached reads start afresh once the import commits.
        bump(everything=True)
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA cache_size")
                cache_size = cursor.fetchone()[0]
                # The default 2 MiB page cache thrashes on the audit/message indexes (random
                # UUID and legacy-id keys); this session gets 16 MiB, restored afterwards
                # (64 MiB was no faster, and the forked pipeline reader would double it).
                cursor.execute("PRAGMA cache_size = -16384")
        if connection.vendor == "mysql":
            with connection.cursor() as cursor:
                # References are checked by the mappers; rows arrive in file order.
                cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        try:
            # Under the lock: on SQLite a read waits behind a running import's write.
            _warn_of_another_install(loaded.get("security/users"), report)
            ctx.permission_ids = _permission_catalog(loaded, ctx.dry_run, writer)
            if not ctx.dry_run and (root / file_label("security/audit_logs")).is_file():
                from legacy.migration.writer import AuditChain

                writer.chain = AuditChain(writer)
            if default_org is not None:
                writer.add(default_org)
                writer.flush()
                report.notes[
                    "security/organizations.json absent: created org_default as AgentForge does on first start"
                ] += 1
            for collection, mapper in registry.items():
                file_path = present.get(collection)
                if file_path is None:
                    continue
                report.files.append(mapper.file)
                try:
                    _import_collection(mapper, file_path, loaded.get(collection), ctx, writer, report, options, fail)
                    writer.flush()
                except CaseTwinError as exc:
                    raise ImportAborted(
                        LegacyDataError(
                            mapper.file, f"the id differs from {exc.other!r} only in case (one row on MariaDB)", exc.key
                        ),
                        report,
                    ) from None
            _import_lab(root, ctx, writer, report, options, fail)
            writer.flush()
            if writer.chain is not None:
                writer.chain.finish()
            if not ctx.dry_run:
                _report_cross_org_links(writer, report)
        finally:
            if connection.vendor == "mysql":
                with connection.cursor() as cursor:
                    cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
            if connection.vendor == "sqlite":
                with connection.cursor() as cursor:
                    cursor.execute(f"PRAGMA cache_size = {int(cache_size)}")
        if ctx.dry_run or report.errors:
            transaction.set_rollback(True)

    if not ctx.dry_run and not report.errors:
        # The planner must know the new rows before the first query (see db_statistics).
        refresh_statistics(table for table, stats in writer.stats.items() if stats.created or stats.updated)

    for folder in ("uploads", "demo_assets"):
        if (root / folder).is_dir():
            count = sum(1 for p in (root / folder).rglob("*") if p.is_file())
            report.not_imported[f"{folder}/ (binary files, left on disk)"] = count
    report.stats = dict(writer.stats)
    report.differences = dict(writer.differences)
    for table, key, fields in writer.immutable_conflicts[:MAX_WARNINGS_KEPT]:
        report.warn(
            "security/audit_logs",
            f"{table}: entry {key} differs from the database ({', '.join(fields)}); "
            "audit entries are append-only, left as they are",
        )
    for table, key in writer.duplicates[:MAX_WARNINGS_KEPT]:
        report.warnings.append(f"{table}: duplicate id {key[0]!r} in the input; the later record wins")
    report.seconds = time.monotonic() - started
    return report


def _import_collection(mapper, file_path, data, ctx, writer, report, options, fail):
    collection = mapper.collection
    main_table = mapper.model._meta.db_table
    progress = options.progress
    count = 0

    def on_messages(warnings, notes):
        for message in warnings:
            report.warn(collection, message)
            writer.stats[main_table].warnings += 1
        for note in notes:
            report.notes[note] += 1

    def handle(mapped):
        on_messages(mapped.warnings, mapped.notes)
        writer.add(mapped)

    if mapper.container == "object":
        try:
            handle(mapper.to_rows(data, ctx))
        except LegacyDataError as exc:
            fail(exc)
        report.records[collection] += 1
        return
    if data is None and mapper.stream and pipeline.eligible(mapper, file_path, ctx) is None:
        before = _Snapshot(writer, report)
        try:
            with transaction.atomic():  # a savepoint: an aborted lane leaves nothing behind
                count = pipeline.import_pipelined(
                    mapper, file_path, ctx, writer, on_messages=on_messages, fail=fail, progress=progress
                )
        except pipeline.PipelineAbort as exc:
            before.restore(writer, report)
            report.pipeline_fallbacks[mapper.file] = str(exc)
        else:
            report.pipelined.append(mapper.file)
            report.records[collection] += count
            if progress is not None:
                progress(collection, count)
            return
    if data is not None:
        records = data.items() if mapper.container == "dict" else ((None, item) for item in data)
    else:
        records = read_records(file_path, mapper.file, mapper.container, stream=True)
    # A streamed file's ids become known as its records are read (chunks refer to documents).
    collect_ids = data is None and LEGACY_COLLECTIONS[collection].referenced
    try:
        for outer_key, record in records:
            try:
                if collection == "chunks_index":
                    mapped = mapper.to_rows(record, ctx, outer_key, position=count)
                else:
                    mapped = mapper.to_rows(record, ctx, outer_key)
            except LegacyDataError as exc:
                fail(exc)
                count += 1
                continue
            if collect_ids:
                ctx.add_source_ids(mapper.model, [mapped.legacy_id])
            handle(mapped)
            count += 1
            if progress is not None and count % 1000 == 0:
                progress(collection, count)
    except LegacyDataError as exc:  # malformed JSON while streaming
        fail(exc)
    report.records[collection] += count
    if progress is not None:
        progress(collection, count)
    if mapper.model is LegacyRecord:
        report.notes[f"{mapper.file}: kept verbatim in legacy_records (no table of its own)"] += count


class _Snapshot:
    """What importing a collection changes outside the database, to undo an aborted pipeline."""

    def __init__(self, writer, report: ImportReport):
        self.stats = {table: tuple(getattr(s, f) for f in Stats.__slots__) for table, s in writer.stats.items()}
        self.warnings = len(report.warnings)
        self.warning_counts = report.warning_counts.copy()
        self.notes = report.notes.copy()
        chain = writer.chain
        self.chain = (dict(chain.heads), dict(chain.last)) if chain is not None else None

    def restore(self, writer, report: ImportReport) -> None:
        for table in list(writer.stats):
            if table not in self.stats:
                del writer.stats[table]
        for table, values in self.stats.items():
            for name, value in zip(Stats.__slots__, values):
                setattr(writer.stats[table], name, value)
        del report.warnings[self.warnings :]
        report.warning_counts = self.warning_counts
        report.notes = self.notes
        if self.chain is not None:
            writer.chain.heads, writer.chain.last = self.chain


class ImportRunning(Exception):
    """Another import holds the database's import lock (nothing was read or written)."""


IMPORT_LOCK = "agentforge.import_json"


@contextlib.contextmanager
def one_import_at_a_time(skip: bool = False):
    """Hold the database's import lock for the whole transaction, or stop at once (import_json,
    and verify_parity's repair from the files, which writes as an import does).

    Two imports of one directory would insert the same keys side by side: the second
    blocks on the first's rows and then dies on a duplicate key (PostgreSQL), a deadlock
    (MariaDB) or the busy timeout (SQLite), with a traceback. A session lock that the server
    drops with the connection (or, on SQLite, a lock on a file beside the database that the
    kernel drops with the process) survives no crash. Dry runs write nothing and take none."""
    if skip:
        yield
        return
    busy = ImportRunning(
        "another import is writing to this database (import_json, or verify_parity --fix-from json); "
        "wait for it to end, then run again"
    )
    vendor = connection.vendor
    if vendor == "sqlite":
        name = str(connection.settings_dict["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            yield
            return
        fd = os.open(name + ".import-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise busy from None
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
        return
    if vendor == "postgresql":
        take, give = "SELECT pg_try_advisory_lock(hashtext(%s))", "SELECT pg_advisory_unlock(hashtext(%s))"
    elif vendor == "mysql":  # GET_LOCK names are server-wide: one per database
        take, give = (
            "SELECT GET_LOCK(CONCAT(DATABASE(), '.', %s), 0)",
            "SELECT RELEASE_LOCK(CONCAT(DATABASE(), '.', %s))",
        )
    else:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute(take, [IMPORT_LOCK])
        if not cursor.fetchone()[0]:
            raise busy
    try:
        yield
    finally:
        if connection.is_usable():
            with connection.cursor() as cursor:
                cursor.execute(give, [IMPORT_LOCK])


# Enough of the file's user ids to tell a re-run (most are known) from another install (none).
INSTALL_SAMPLE = 500


def _warn_of_another_install(users, report) -> None:
    """Warn when the database holds users an earlier import wrote and this directory names none
    of them: most likely another AgentForge install, whose records merge into this database's
    organizations (``org_default`` is the same id in every install). A re-run of the same install
    (the parallel run, a retry) finds its users again."""
    if not users:
        return
    mapper = registry["security/users"]
    ids = mapper.source_ids(users)[:INSTALL_SAMPLE]
    imported = mapper.model.all_orgs.filter(legacy_id__isnull=False)
    if imported.exists() and not imported.filter(legacy_id__in=ids).exists():
        report.warn(
            "security/users",
            f"{mapper.file}: none of its users is one an earlier import wrote into this database: if this "
            "is another AgentForge install, its records are merging into this database's organizations "
            "(org_default among them)",
        )


def _report_cross_org_links(writer, report) -> None:
    """Warn about imported links between organizations (JSON-era identity configs naming
    the default organization's roles): the ORM refuses to write such links and scoped
    queries and accessors do not follow them, so an admin should re-point them."""
    from django.apps import apps

    from agentforge_core.models import cross_org_links

    tables = {table for table, stats in writer.stats.items() if stats.created or stats.updated}
    written = [m for m in apps.get_models() if m._meta.db_table in tables]
    for model, link, pk, legacy_id, target in cross_org_links(written, skip=links_checked_at_commit()):
        report.warn(
            "organization links",
            f"{model._meta.db_table}: record {legacy_id or pk}: {link.name}: refers to {target}, a row of "
            "another organization; organization-scoped queries will not follow this link",
        )


def links_checked_at_commit() -> set[tuple[str, str]]:
    """``(table, column)`` of the links that PostgreSQL's composite tenant keys check when this
    transaction commits: a link across organizations there fails the import itself, so the
    report need not look for one (the largest tables' queries). Read from the catalog, so a
    key a database administrator dropped, left unvalidated or disabled is still looked for;
    none while the session skips foreign keys (``session_replication_role``), and none
    elsewhere (MariaDB imports with ``FOREIGN_KEY_CHECKS = 0``)."""
    if connection.vendor != "postgresql":
        return set()
    from django.apps import apps

    from accounts.tenant_schema import org_link_name, tenant_links

    names = {org_link_name(table, column): (table, column) for table, column, _t, _c in tenant_links(apps)}
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('session_replication_role')")
        if cursor.fetchone()[0] != "origin":
            return set()
        cursor.execute(
            "SELECT c.conname, c.conrelid::regclass::text FROM pg_constraint c "
            "WHERE c.contype = 'f' AND c.convalidated AND c.conname = ANY(%s) AND NOT EXISTS "
            "(SELECT 1 FROM pg_trigger t WHERE t.tgconstraint = c.oid AND t.tgenabled = 'D')",
            [list(names)],
        )
        return {names[name] for name, table in cursor.fetchall() if table.strip('"') == names[name][0]}


def _import_lab(root: Path, ctx, writer, report, options, fail):
    folder = root / "lab"
    if not folder.is_dir():
        if os.path.lexists(folder):
            fail(LegacyDataError("lab/", "not a directory; refused"))
        return
    binaries = 0
    from legacy.format.jsonio import load_json

    for file_path in sorted(folder.iterdir()):
        if file_path.suffix != ".json":
            binaries += file_path.is_file()
            continue
        try:
            if legacy_file(root, file_path, f"lab/{file_path.name}") is None:
                continue
            data = load_json(file_path, f"lab/{file_path.name}")
        except LegacyDataError as exc:
            fail(exc)
            continue
        writer.add(lab.map_file(file_path.name, data, ctx))
        report.records["lab"] += 1
    report.files.append("lab/")
    if binaries:
        report.not_imported["lab/ binary files (generated documents/images, left on disk)"] = binaries


def _default_organization(root: Path, ctx):
    """Without security/organizations.json AgentForge's SecurityState created ``org_default`` on
    its first start, and every record without an org_id belongs to it: do the same (mapped, not
    yet written) unless the database has it already."""
    if (root / file_label("security/organizations")).is_file() or ctx.exists(Organization, "org_default"):
        return None
    from legacy.format.mappers.accounts import default_organization_record

    ctx.add_source_ids(Organization, ["org_default"])
    return registry["security/organizations"].to_rows(default_organization_record(ctx.now), ctx)


def _user_groups(users) -> dict:
    out = defaultdict(list)
    for user_id, record in (users or {}).items():
        if isinstance(record, dict) and isinstance(record.get("group_ids"), list):
            for gid in record["group_ids"]:
                if isinstance(gid, str):
                    out[gid].append(record.get("id", user_id))
    return dict(out)


def _duplicate_emails(users, ctx) -> list:
    """Two users of one organization with the same email (case-insensitive) cannot coexist."""
    errors = []
    seen = {}
    for outer, record in (users or {}).items():
        if not isinstance(record, dict) or not isinstance(record.get("email"), str):
            continue
        key = (record.get("org_id"), normalize_email_address(record["email"]))
        rid = record.get("id", outer)
        if key in seen:
            errors.append(
                LegacyDataError(
                    "security/users.json",
                    f"duplicate email {record['email']!r} in organization {key[0]!r} (also record {seen[key]})",
                    rid,
                    "email",
                )
            )
        else:
            seen[key] = rid
    # against users already in the database (another id, same org and email)
    if seen and User.all_orgs.exists():
        from agentforge_core.models import legacy_uuid

        for (org_legacy, email), rid in seen.items():
            org_pk = ctx.ref(Organization, org_legacy) if isinstance(org_legacy, str) else None
            if org_pk is None:
                continue
            clash = (
                User.all_orgs.filter(org_id=org_pk, email_normalized=email)
                .exclude(pk=legacy_uuid("users", str(rid)))
                .values_list("legacy_id", "pk")
                .first()
            )
            if clash:
                errors.append(
                    LegacyDataError(
                        "security/users.json",
                        f"email {email!r} already belongs to user {clash[0] or clash[1]} in the database",
                        rid,
                        "email",
                    )
                )
    return errors


def _permission_catalog(loaded, dry_run, writer) -> dict:
    codes = permission_codes(loaded.get("security/roles")) | permission_codes(loaded.get("security/users"))
    existing = dict(Permission.objects.filter(codename__in=codes).values_list("codename", "id")) if codes else {}
    stats = writer.stats["permissions"]
    stats.unchanged += len(existing)
    missing = sorted(codes - set(existing))
    stats.created += len(missing)
    if missing and not dry_run:
        Permission.objects.bulk_create([Permission(codename=c) for c in missing], batch_size=500)
        existing.update(Permission.objects.filter(codename__in=missing).values_list("codename", "id"))
    for index, code in enumerate(missing):
        existing.setdefault(code, -(index + 1))
    return existing


def summary_rows(report: ImportReport) -> list[tuple]:
    rows = []
    for table in sorted(report.stats):
        s: Stats = report.stats[table]
        rows.append((table, s.created, s.updated, s.unchanged, s.skipped, s.warnings))
    return rows
