"""Backup and restore with the database's own tools, checked after writing.

========== ============================================ ===============================================
backend    backup (checked by)                          restore
========== ============================================ ===============================================
postgresql ``pg_dump -Fc`` (``pg_restore --list``)      ``pg_restore --clean --if-exists --single-transaction``
mysql      ``mysqldump --single-transaction``           ``mysql`` client reading the file
           (file ends with ``-- Dump completed``)
sqlite     online backup API, ``sqlite3.Connection.backup``  the same API, backup file -> live database
           (``PRAGMA integrity_check`` on the copy)
sqlserver, portable: every model through its unscoped base   flush, then bulk insert inside one transaction
oracle     manager, streamed as gzipped JSON lines with a
           trailer of row counts (every line parsed back)
========== ============================================ ===============================================

The portable format works on every backend (``method="portable"``). Encrypted fields are
written as the ciphertext stored in the database, never decrypted.

Passwords reach the tools through ``PGPASSWORD`` / ``MYSQL_PWD`` in the child's
environment, never on its command line. A backup is written to a temporary name next to
the target and renamed only once it has been checked, with mode 0600.

``restore_database`` refuses a database that holds any row in any of the project's tables
unless ``force=True``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction

from agentforge_site.files import private_dir
from agentforge_site.replicas import primary_only

PORTABLE_FORMAT = "agentforge-portable-backup"
PORTABLE_VERSION = 1

EXTENSIONS = {"postgresql": ".dump", "mysql": ".sql", "sqlite": ".sqlite3", "portable": ".jsonl.gz"}
NATIVE = ("postgresql", "mysql", "sqlite")


class BackupError(Exception):
    """A backup or restore that failed; ``str()`` is one line."""


class RestoreRefused(BackupError):
    """The target database holds data and ``force`` was not given."""


@dataclass
class RestoreResult:
    path: Path
    method: str
    seconds: float
    rows: dict = field(default_factory=dict)  # table -> rows after the restore (project tables)


# --- helpers ----------------------------------------------------------------------------------------


def project_models() -> list:
    """Concrete, managed models of the project's own apps (not Django's or third parties')."""
    base = str(Path(settings.BASE_DIR).resolve())
    result = []
    for config in apps.get_app_configs():
        path = str(Path(config.path).resolve())
        if not path.startswith(base) or "site-packages" in path:
            continue
        for model in config.get_models():
            meta = model._meta
            if meta.managed and not meta.proxy and not meta.swapped:
                result.append(model)
    return result


def nonempty_tables(alias: str = DEFAULT_DB_ALIAS) -> dict[str, int]:
    """Project tables holding rows: {table: 1} for each (existence is enough)."""
    conn = connections[alias]
    with conn.cursor() as cursor:
        existing = set(conn.introspection.table_names(cursor))
    found = {}
    for model in project_models():
        table = model._meta.db_table
        if table in existing and model._base_manager.using(alias).exists():
            found[table] = 1
    return found


def row_counts(alias: str = DEFAULT_DB_ALIAS) -> dict[str, int]:
    conn = connections[alias]
    with conn.cursor() as cursor:
        existing = set(conn.introspection.table_names(cursor))
    return {
        m._meta.db_table: m._base_manager.using(alias).count() for m in project_models() if m._meta.db_table in existing
    }


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def describe(path: Path) -> str:
    return f"{path} ({_human(path.stat().st_size)})"


def _default_path(vendor_key: str, name: str) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stem = Path(str(name)).stem if vendor_key in ("sqlite",) or "/" in str(name) else str(name)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "db"
    return Path(settings.BACKUP_DIR) / f"agentforge-{safe}-{stamp}{EXTENSIONS[vendor_key]}"


def _target(output: str | os.PathLike | None, method: str, name: str) -> Path:
    default = _default_path(method, name)
    if output is None:
        path = default
    else:
        path = Path(output).expanduser()
        if path.is_dir() or str(output).endswith(os.sep):
            path = path / default.name
    if not path.parent.exists():
        private_dir(path.parent)  # a directory of backups is as secret as the database
    return path


def _run(cmd: list[str], env_extra: dict, what: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({k: v for k, v in env_extra.items() if v})
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, **kwargs)
    except FileNotFoundError:
        package = "postgresql-client" if cmd[0].startswith("pg_") else "mariadb-client"
        raise BackupError(f"{cmd[0]} not found: install {package}, or use the portable format") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
        detail = next(
            (line for line in lines if "error" in line.lower()), lines[-1] if lines else f"exit {proc.returncode}"
        )
        raise BackupError(f"{what} failed: {detail[:300]}")
    return proc


# --- PostgreSQL ------------------------------------------------------------------------------------------


def _pg_args(settings_dict: dict) -> tuple[list[str], dict]:
    args = []
    if settings_dict.get("HOST"):
        args += ["--host", settings_dict["HOST"]]
    if settings_dict.get("PORT"):
        args += ["--port", str(settings_dict["PORT"])]
    # The owner role (DB_MIGRATION_USER): it bypasses row-level security, so pg_dump sees every
    # organization's rows and pg_restore may recreate the tables; the application role may not.
    user = settings_dict.get("MIGRATION_USER") or settings_dict.get("USER")
    password = (
        settings_dict.get("MIGRATION_PASSWORD")
        if settings_dict.get("MIGRATION_USER")
        else settings_dict.get("PASSWORD")
    )
    if user:
        args += ["--username", user]
    options = settings_dict.get("OPTIONS", {})
    env = {
        "PGPASSWORD": password or "",
        "PGSSLMODE": options.get("sslmode", ""),
        "PGSSLROOTCERT": options.get("sslrootcert", ""),
        "PGSSLCERT": options.get("sslcert", ""),
        "PGSSLKEY": options.get("sslkey", ""),
        "PGAPPNAME": "agentforge-backup",
        "PGCONNECT_TIMEOUT": "10",
    }
    return args + ["--no-password"], env


def _pg_check(path: Path) -> int:
    """``pg_restore --list``: the archive reads back; return its number of TABLE DATA entries."""
    proc = _run(["pg_restore", "--list", str(path)], {}, "pg_restore --list")
    entries = [line for line in proc.stdout.splitlines() if " TABLE DATA " in line]
    if not entries:
        raise BackupError(f"pg_restore --list: {path} holds no table data")
    return len(entries)


def _pg_backup(conn, tmp: Path) -> None:
    args, env = _pg_args(conn.settings_dict)
    _run(
        ["pg_dump", "--format=custom", "--file", str(tmp), *args, "--dbname", conn.settings_dict["NAME"]],
        env,
        "pg_dump",
    )
    _pg_check(tmp)


def _pg_restore(conn, path: Path) -> None:
    _pg_check(path)
    args, env = _pg_args(conn.settings_dict)
    conn.close()  # no session of ours holds locks on the tables being replaced
    _run(
        [
            "pg_restore",
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            *args,
            "--dbname",
            conn.settings_dict["NAME"],
            str(path),
        ],
        env,
        "pg_restore",
    )


# --- MariaDB / MySQL -------------------------------------------------------------------------------------


def _mysql_args(settings_dict: dict) -> tuple[list[str], dict]:
    args = ["--default-character-set=utf8mb4"]
    host = settings_dict.get("HOST") or ""
    if host.startswith("/"):
        args.append(f"--socket={host}")
    elif host:
        args += [f"--host={host}", "--protocol=TCP"]
    if settings_dict.get("PORT"):
        args.append(f"--port={settings_dict['PORT']}")
    if settings_dict.get("USER"):
        args.append(f"--user={settings_dict['USER']}")
    options = settings_dict.get("OPTIONS", {})
    ssl = options.get("ssl") or {}
    for key in ("ca", "cert", "key"):
        if ssl.get(key):
            args.append(f"--ssl-{key}={ssl[key]}")
    if options.get("ssl_mode") in ("REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"):
        args.append("--ssl")
        if options["ssl_mode"] == "VERIFY_IDENTITY":
            args.append("--ssl-verify-server-cert")
    return args, {"MYSQL_PWD": settings_dict.get("PASSWORD") or ""}


def _mysql_check(path: Path) -> None:
    with open(path, "rb") as fh:
        fh.seek(max(path.stat().st_size - 512, 0))
        tail = fh.read().decode("utf-8", "replace")
    if "-- Dump completed" not in tail:
        raise BackupError(f"{path} is not a complete mysqldump file (no '-- Dump completed' at its end)")


def _mysql_backup(conn, tmp: Path) -> None:
    args, env = _mysql_args(conn.settings_dict)
    _run(
        [
            "mysqldump",
            *args,
            "--single-transaction",
            "--quick",
            "--routines",
            "--triggers",
            "--hex-blob",
            "--no-tablespaces",
            f"--result-file={tmp}",
            conn.settings_dict["NAME"],
        ],
        env,
        "mysqldump",
    )
    _mysql_check(tmp)


def _mysql_restore(conn, path: Path) -> None:
    _mysql_check(path)
    args, env = _mysql_args(conn.settings_dict)
    conn.close()
    with open(path, "rb") as fh:
        _run(["mysql", *args, "--binary-mode", conn.settings_dict["NAME"]], env, "mysql (restore)", stdin=fh)


# --- SQLite ------------------------------------------------------------------------------------------------


def _sqlite_check(path: Path) -> None:
    check = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = [row[0] for row in check.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: not a usable SQLite database ({exc})") from None
    finally:
        check.close()
    if result != ["ok"]:
        raise BackupError(f"PRAGMA integrity_check on {path}: {'; '.join(map(str, result[:3]))}")


def _sqlite_backup(conn, tmp: Path) -> None:
    conn.ensure_connection()
    target = sqlite3.connect(tmp)
    try:
        conn.connection.backup(target)
        # A self-contained file: no -wal/-shm side files needed to read the copy.
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()
    _sqlite_check(tmp)


def _sqlite_restore(conn, path: Path) -> None:
    _sqlite_check(path)
    conn.ensure_connection()
    if conn.in_atomic_block:
        raise BackupError("cannot restore SQLite inside a transaction")
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        source.backup(conn.connection)
    finally:
        source.close()


# --- portable (all backends) ---------------------------------------------------------------------------


def _portable_models() -> list:
    """Every concrete model whose rows are data (not rebuilt by migrate), parents before children."""
    skip = {("contenttypes", "contenttype"), ("auth", "permission")}
    candidates = [
        m
        for m in apps.get_models()
        if m._meta.managed and not m._meta.proxy and (m._meta.app_label, m._meta.model_name) not in skip
    ]
    ordered, seen = [], set()

    def visit(model, stack=()):
        if model in seen or model in stack:
            return
        for f in model._meta.concrete_fields:
            target = f.related_model if f.is_relation else None
            if target is not None and target is not model and target in candidates:
                visit(target, stack + (model,))
        seen.add(model)
        ordered.append(model)

    for m in sorted(candidates, key=lambda m: m._meta.label):
        visit(m)
    return ordered


def _is_encrypted(f) -> bool:
    return bool(getattr(f, "encrypted", False))


def _portable_serializer_class():
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType
    from django.core.serializers.json import DjangoJSONEncoder
    from django.core.serializers.jsonl import Serializer as JSONLSerializer

    natural_models = (ContentType, Permission)

    class FullPrecisionEncoder(DjangoJSONEncoder):
        """DjangoJSONEncoder cuts datetimes and times to milliseconds; a backup keeps microseconds."""

        def default(self, o):
            if isinstance(o, (dt.datetime, dt.time)):
                if isinstance(o, dt.time) and o.utcoffset() is not None:
                    raise ValueError("JSON can't represent timezone-aware times.")
                return o.isoformat()
            return super().default(o)

    class PortableSerializer(JSONLSerializer):
        """JSON lines; content types and auth permissions by natural key, secrets as stored."""

        def end_object(self, obj):
            json.dump(self.get_dump_object(obj), self.stream, cls=FullPrecisionEncoder, ensure_ascii=False)
            self.stream.write("\n")
            self._current = None

        def handle_field(self, obj, f):
            if _is_encrypted(f):
                self._current[f.name] = getattr(obj, "_raw_" + f.attname)
            else:
                super().handle_field(obj, f)

        def handle_fk_field(self, obj, f):
            value = getattr(obj, f.attname)
            if value is not None and f.related_model in natural_models:
                value = f.related_model._base_manager.using(obj._state.db).get(pk=value).natural_key()
            self._current[f.name] = value

        def handle_m2m_field(self, obj, f):
            if not f.remote_field.through._meta.auto_created:
                return  # explicit through models are dumped as models of their own
            related = getattr(obj, f.name).all()
            if f.related_model in natural_models:
                self._current[f.name] = [r.natural_key() for r in related]
            else:
                self._current[f.name] = list(related.values_list("pk", flat=True))

    return PortableSerializer


def _portable_backup(conn, tmp: Path) -> None:
    from django.db.migrations.recorder import MigrationRecorder
    from django.db.models import TextField
    from django.db.models.functions import Cast

    from agentforge_core.tenancy import unscoped

    serializer = _portable_serializer_class()()
    counts: dict[str, int] = {}
    with conn.cursor() as cursor:
        existing = set(conn.introspection.table_names(cursor))
    header = {
        "format": PORTABLE_FORMAT,
        "version": PORTABLE_VERSION,
        "vendor": conn.vendor,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "migrations": sorted(f"{a}.{n}" for a, n in MigrationRecorder(conn).applied_migrations()),
    }
    # One snapshot where the backend offers it, so rows of different tables agree.
    outermost = not conn.in_atomic_block
    with unscoped(), transaction.atomic(using=conn.alias), gzip.open(tmp, "wt", encoding="utf-8") as fh:
        if conn.vendor == "postgresql" and outermost:
            with conn.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        fh.write(json.dumps(header) + "\n")
        for model in _portable_models():
            if model._meta.db_table not in existing:
                continue
            secret = [f for f in model._meta.concrete_fields if _is_encrypted(f)]
            qs = model._base_manager.using(conn.alias).order_by("pk")
            if secret:
                qs = qs.defer(*[f.name for f in secret]).annotate(
                    **{"_raw_" + f.attname: Cast(f.attname, output_field=TextField()) for f in secret}
                )
            n = 0

            def rows():
                nonlocal n
                for obj in qs.iterator(chunk_size=1000):
                    n += 1
                    yield obj

            serializer.serialize(rows(), stream=fh)
            counts[model._meta.label_lower] = n
        fh.write(json.dumps({"end": PORTABLE_FORMAT, "objects": sum(counts.values()), "per_model": counts}) + "\n")
    _portable_check(tmp)


def _portable_check(path: Path) -> dict:
    """Parse every line back; the trailer must be there and its counts must match."""
    seen: dict[str, int] = {}
    header = trailer = None
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                record = json.loads(line)
                if number == 1:
                    header = record
                    if record.get("format") != PORTABLE_FORMAT:
                        raise BackupError(f"{path}: not an {PORTABLE_FORMAT} file")
                elif "end" in record:
                    trailer = record
                else:
                    seen[record["model"]] = seen.get(record["model"], 0) + 1
    except (OSError, EOFError, ValueError, KeyError) as exc:
        raise BackupError(f"{path}: unreadable portable backup ({exc})") from None
    if trailer is None:
        raise BackupError(f"{path}: truncated portable backup (no trailer)")
    expected = {k: v for k, v in trailer["per_model"].items() if v}
    if expected != seen:
        raise BackupError(f"{path}: row counts differ from the trailer")
    return header


def _portable_restore(conn, path: Path) -> None:
    from django.core.management import call_command
    from django.core.management.color import no_style

    _portable_check(path)
    alias = conn.alias
    # The schema first (a new database), then empty every table (post_migrate rebuilds
    # content types and permissions, which the file names by natural key).
    call_command("migrate", database=alias, interactive=False, verbosity=0)
    call_command("flush", database=alias, interactive=False, verbosity=0)

    loaded_models = set()

    def flush_batch(model, batch, m2m):
        # A plain QuerySet: the rows go in as they were, past any manager's own bulk_create
        # (the audit trail's would re-hash and touch its chain heads).
        models.QuerySet(model=model, using=alias).bulk_create(batch)
        for obj, data in m2m:
            for name, values in data.items():
                getattr(obj, name).set(values)
        loaded_models.add(model)

    # bulk_create would stamp auto_now/auto_now_add fields with the time of the restore.
    stamped = [
        (f, f.auto_now, f.auto_now_add)
        for m in apps.get_models()
        for f in m._meta.concrete_fields
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
    ]
    for f, _, _ in stamped:
        f.auto_now = f.auto_now_add = False
    try:
        _portable_load(conn, path, flush_batch, loaded_models)
    finally:
        for f, now, now_add in stamped:
            f.auto_now, f.auto_now_add = now, now_add
    statements = conn.ops.sequence_reset_sql(no_style(), list(loaded_models))
    if statements:
        with conn.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)


def _portable_load(conn, path: Path, flush_batch, loaded_models: set) -> None:
    from django.core.serializers.python import Deserializer
    from django.db.models import TextField, Value

    from agentforge_core.tenancy import unscoped

    alias = conn.alias
    with unscoped(), transaction.atomic(using=alias), conn.constraint_checks_disabled():
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            next(fh)  # header
            model = None
            batch: list = []
            m2m: list = []
            for line in fh:
                record = json.loads(line)
                if "end" in record:
                    break
                for item in Deserializer([record], using=alias, ignorenonexistent=True):
                    obj = item.object
                    if type(obj) is not model or len(batch) >= 500:
                        if batch:
                            flush_batch(model, batch, m2m)
                        model, batch, m2m = type(obj), [], []
                    for f in obj._meta.concrete_fields:
                        if _is_encrypted(f):
                            raw = getattr(obj, f.attname)
                            if raw not in (None, ""):
                                # The stored ciphertext goes back as is (no second encryption).
                                setattr(obj, f.attname, Value(raw, output_field=TextField()))
                    batch.append(obj)
                    if item.m2m_data:
                        m2m.append((obj, item.m2m_data))
            if batch:
                flush_batch(model, batch, m2m)
        tables = [m._meta.db_table for m in loaded_models]
        conn.check_constraints(table_names=tables)


# --- entry points -----------------------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """``postgresql``, ``mysql``, ``sqlite`` or ``portable`` from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PGDMP"):
        return "postgresql"
    if head.startswith(b"SQLite format 3\x00"):
        return "sqlite"
    if head.startswith(b"\x1f\x8b"):
        return "portable"
    text = head.decode("utf-8", "replace")
    if (
        text.startswith(("-- MariaDB dump", "-- MySQL dump", "/*!999999"))
        or "-- MariaDB dump" in text
        or "-- MySQL dump" in text
    ):
        return "mysql"
    raise BackupError(f"{path}: not a backup this tool wrote (unknown format)")


@primary_only()
def backup_database(
    output: str | os.PathLike | None = None, *, alias: str = DEFAULT_DB_ALIAS, method: str | None = None
) -> Path:
    """Back up the database behind ``alias``; return the checked file's path.

    ``output`` is a file or directory (default: ``BACKUP_DIR``/agentforge-<db>-<UTC time>.<ext>).
    ``method`` is ``"native"`` (default where a native tool exists) or ``"portable"``.
    Raises BackupError (one line) when a tool fails or the written file does not check.
    """
    conn = connections[alias]
    vendor = conn.vendor
    if method in (None, "native"):
        if vendor not in NATIVE:
            if method == "native":
                raise BackupError(f"no native backup tool for {vendor}: use the portable format")
            method = "portable"
        else:
            method = vendor
    elif method != "portable":
        raise BackupError(f"unknown backup method {method!r} (native or portable)")
    path = _target(output, method, conn.settings_dict.get("NAME") or "db")
    tmp = path.with_name(f".{path.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        old_umask = os.umask(0o077)
        try:
            {"postgresql": _pg_backup, "mysql": _mysql_backup, "sqlite": _sqlite_backup, "portable": _portable_backup}[
                method
            ](conn, tmp)
        finally:
            os.umask(old_umask)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BackupError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        from operations.connection import one_line_error

        raise BackupError(f"backup failed: {one_line_error(exc)}") from exc
    return path


@primary_only()
def restore_database(path: str | os.PathLike, force: bool = False, *, alias: str = DEFAULT_DB_ALIAS) -> RestoreResult:
    """Replace the database behind ``alias`` with the backup at ``path``.

    Refuses (RestoreRefused) when any project table holds a row, unless ``force``.
    The file is checked before anything is touched.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackupError(f"{path}: no such backup file")
    conn = connections[alias]
    kind = detect_format(path)
    if kind != "portable" and kind != conn.vendor:
        raise BackupError(
            f"{path} is a {kind} backup but the database is {conn.vendor}: "
            "move data between backends with a portable backup (backup --format portable)"
        )
    if conn.in_atomic_block:
        raise BackupError("cannot restore inside a transaction (atomic block)")
    start = time.perf_counter()
    try:
        full = nonempty_tables(alias)
    except Exception as exc:
        from operations.connection import one_line_error

        raise BackupError(f"cannot read the target database: {one_line_error(exc)}") from None
    if full and not force:
        names = ", ".join(sorted(full)[:5]) + (" ..." if len(full) > 5 else "")
        raise RestoreRefused(
            f"database {conn.settings_dict.get('NAME')!r} is not empty ({len(full)} tables hold rows: {names}); "
            "restore with --force to overwrite it"
        )
    try:
        {"postgresql": _pg_restore, "mysql": _mysql_restore, "sqlite": _sqlite_restore, "portable": _portable_restore}[
            kind
        ](conn, path)
    except BackupError:
        raise
    except Exception as exc:
        from operations.connection import one_line_error

        raise BackupError(f"restore failed: {one_line_error(exc)}") from exc
    return RestoreResult(path=path, method=kind, seconds=round(time.perf_counter() - start, 3), rows=row_counts(alias))


__all__ = [
    "BackupError",
    "RestoreRefused",
    "RestoreResult",
    "backup_database",
    "restore_database",
    "detect_format",
    "nonempty_tables",
    "row_counts",
    "project_models",
    "describe",
]
