"""``export_directory(out_dir)``: write the legacy layout back from the database.

Secrets are decrypted; formatting follows the legacy writers (security files with
``ensure_ascii=False``, app files with ``ensure_ascii=True``, indent 2, ``chunks_index``
on one line, no trailing newline). Big collections are streamed from the database.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict

from django.db import connection, transaction

from accounts.models import User
from agentforge_site.files import private_dir
from agentforge_site.replicas import primary_only
from conversations.models import Message
from knowledge.models import Document
from legacy.format import passwords
from legacy.format.collections import LEGACY_COLLECTIONS
from legacy.format.jsonio import JSONWriter, write_object
from legacy.format.mappers import Context, lab, registry


@primary_only()
def export_directory(out_dir, progress=None) -> Counter:
    """Write every legacy file under ``out_dir``; return records written per file."""
    root = private_dir(out_dir)  # decrypted secrets: 0700 directories, 0600 files
    with _snapshot():
        return _export(root, progress)


@contextlib.contextmanager
def _snapshot():
    """Read every table as of one moment: an application (the dual-write store) writing during
    the export must not leave agents.json naming a tool that tools.json, written a second
    earlier, lacks. A transaction that only reads and blocks no writer, on every backend (not
    READ ONLY: the slow-query monitor still records its events in it)."""
    if connection.in_atomic_block:  # the caller's transaction is the view
        yield
        return
    vendor = connection.vendor
    if vendor == "sqlite":
        # Django's transactions take SQLite's write lock at BEGIN (IMMEDIATE), which would stop
        # every writer for the length of the export; a deferred one reads a WAL snapshot.
        with connection.cursor() as cursor:
            cursor.execute("BEGIN DEFERRED")
            try:
                yield
            finally:
                cursor.execute("COMMIT")
        return
    if vendor == "mysql":  # for the next transaction (the connection's default is READ COMMITTED)
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    with transaction.atomic():
        if vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def _export(root, progress) -> Counter:
    ctx = Context()
    # Legacy ids of every row that records refer to, read once rather than row by row.
    for model in dict.fromkeys(registry[name].model for name, c in LEGACY_COLLECTIONS.items() if c.referenced):
        ctx.preload(model)
    ctx.document_sources = dict(Document.all_orgs.values_list("pk", "source"))
    counts = Counter()
    for collection, mapper in registry.items():  # every legacy file has a mapper
        legacy = LEGACY_COLLECTIONS[collection]
        path = root / legacy.file
        ensure_ascii = legacy.ensure_ascii
        if mapper.container == "object":
            data = mapper.export(ctx)
            if data is None:
                continue
            with _naming(path):
                write_object(path, data, ensure_ascii)
            counts[mapper.file] = 1
            continue
        with _naming(path):
            writer = JSONWriter(path, mapper.container, ensure_ascii, one_line=legacy.one_line)
            try:
                if collection == "conversations":
                    _write_conversations(mapper, writer, ctx)
                else:
                    for instance in mapper.export_queryset().iterator(chunk_size=2000):
                        record = mapper.to_legacy(instance, ctx)
                        writer.add(record, mapper.export_key(instance, record))
                        if progress and writer.count % 1000 == 0:
                            progress(collection, writer.count)
            except BaseException:
                writer.abort()  # the previous file stays whole: a half-written one must not look complete
                raise
            writer.close()
        counts[mapper.file] = writer.count
    for row in lab.export_queryset():
        path = root / "lab" / row.legacy_id
        with _naming(path):
            write_object(path, lab.to_legacy(row), ensure_ascii=False)
        counts["lab/"] += 1
    return counts


@contextlib.contextmanager
def _naming(path):
    """An OSError of a write (disk full) carries no file name: give it the file's."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def passwords_agentforge_cannot_verify() -> int:
    """Users whose usable password hash has no AgentForge form (bcrypt and the like): after a
    rollback they must reset it. PBKDF2 hashes convert (legacy.format.passwords.to_legacy)."""
    from django.db.models import Q

    return User.all_orgs.exclude(
        Q(password__startswith=passwords.DJANGO_ALGORITHM + "$") | Q(password__startswith=passwords.UNUSABLE)
    ).count()


def _write_conversations(mapper, writer, ctx, batch=500):
    pending = []

    def flush():
        if not pending:
            return
        messages = defaultdict(list)
        for message in Message.all_orgs.filter(conversation_id__in=[c.pk for c in pending]).order_by(
            "conversation_id", "position"
        ):
            messages[message.conversation_id].append(message)
        for conv in pending:
            record = mapper.to_legacy(conv, ctx, messages=messages.get(conv.pk, []))
            writer.add(record, record["id"])
        pending.clear()

    for conv in mapper.export_queryset().iterator(chunk_size=batch):
        pending.append(conv)
        if len(pending) >= batch:
            flush()
    flush()
