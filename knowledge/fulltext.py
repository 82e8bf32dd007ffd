"""Keyword search over ``document_chunks.text`` with each backend's own full-text engine.

- PostgreSQL: a stored ``tsvector`` column (``simple`` configuration: no stemming or
  stop words, so every language is treated alike) with a GIN index, ranked by ``ts_rank``.
- MariaDB/MySQL: an InnoDB ``FULLTEXT`` index, natural-language mode (its own relevance).
- SQLite: an FTS5 table kept in sync by triggers, ranked by ``bm25``. It is keyed by its
  own INTEGER PRIMARY KEY map (``document_chunks_fts_ids``), not by the chunk table's
  implicit rowid, which VACUUM may renumber. The organization, tool and document are words
  of an indexed column, so a search intersects them with the terms inside the index.
- SQL Server and Oracle: no full-text catalog is assumed; a portable fallback matches the
  terms with ``icontains`` and ranks a bounded candidate set by term frequency.

A query is split into words and any word may match (OR), ranked by relevance, as a
retrieval engine expects; the words never reach the SQL as syntax.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import reduce
from operator import or_

from django.db import connections, router
from django.db.migrations.operations.base import Operation
from django.db.models import Q

from agentforge_core.tenancy import current_org_id
from knowledge.models import DocumentChunk, as_pk, result_limit

MAX_TERMS = 32
# The fallback ranks at most this many matching rows (it has no index to rank with).
FALLBACK_CANDIDATES = 2000

# SQLite: the organization, tool and document as words of an FTS column ("o<hex> t<hex>
# d<hex>"), so that the index itself narrows a search and ranks only the rows in scope.
_SQLITE_SCOPE = "'o' || {row}.org_id || coalesce(' t' || {row}.tool_id, '') || coalesce(' d' || {row}.document_id, '')"

# Keep the FTS5 table in step with document_chunks (SQLite).
_SQLITE_TRIGGERS = [
    "CREATE TRIGGER IF NOT EXISTS document_chunks_fts_ai AFTER INSERT ON document_chunks BEGIN "
    "INSERT INTO document_chunks_fts_ids (chunk_id) VALUES (new.id); "
    "INSERT INTO document_chunks_fts (rowid, text, scope) "
    f"VALUES (last_insert_rowid(), new.text, {_SQLITE_SCOPE.format(row='new')}); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS document_chunks_fts_ad AFTER DELETE ON document_chunks BEGIN "
    "DELETE FROM document_chunks_fts WHERE rowid = "
    "(SELECT rowid FROM document_chunks_fts_ids WHERE chunk_id = old.id); "
    "DELETE FROM document_chunks_fts_ids WHERE chunk_id = old.id; "
    "END",
    "CREATE TRIGGER IF NOT EXISTS document_chunks_fts_au "
    "AFTER UPDATE OF id, text, org_id, tool_id, document_id ON document_chunks BEGIN "
    "UPDATE document_chunks_fts_ids SET chunk_id = new.id WHERE chunk_id = old.id; "
    f"UPDATE document_chunks_fts SET text = new.text, scope = {_SQLITE_SCOPE.format(row='new')} WHERE rowid = "
    "(SELECT rowid FROM document_chunks_fts_ids WHERE chunk_id = new.id); "
    "END",
]

_SQL = {
    "postgresql": (
        [
            "ALTER TABLE document_chunks ADD COLUMN search_vector tsvector "
            "GENERATED ALWAYS AS (to_tsvector('simple', coalesce(text, ''))) STORED",
            "CREATE INDEX document_chunks_fts ON document_chunks USING GIN (search_vector)",
        ],
        ["DROP INDEX IF EXISTS document_chunks_fts", "ALTER TABLE document_chunks DROP COLUMN search_vector"],
    ),
    "mysql": (
        ["CREATE FULLTEXT INDEX document_chunks_fts ON document_chunks (text)"],
        ["DROP INDEX document_chunks_fts ON document_chunks"],
    ),
    "sqlite": (
        [
            "CREATE TABLE document_chunks_fts_ids (rowid INTEGER PRIMARY KEY, chunk_id char(32) NOT NULL UNIQUE)",
            "CREATE VIRTUAL TABLE document_chunks_fts USING fts5(text, scope, tokenize = 'unicode61 remove_diacritics 2')",
            "INSERT INTO document_chunks_fts_ids (chunk_id) SELECT id FROM document_chunks",
            f"INSERT INTO document_chunks_fts (rowid, text, scope) SELECT i.rowid, c.text, {_SQLITE_SCOPE.format(row='c')} "
            "FROM document_chunks_fts_ids i JOIN document_chunks c ON c.id = i.chunk_id",
            *_SQLITE_TRIGGERS,
        ],
        [
            "DROP TRIGGER IF EXISTS document_chunks_fts_au",
            "DROP TRIGGER IF EXISTS document_chunks_fts_ad",
            "DROP TRIGGER IF EXISTS document_chunks_fts_ai",
            "DROP TABLE IF EXISTS document_chunks_fts",
            "DROP TABLE IF EXISTS document_chunks_fts_ids",
        ],
    ),
}


class CreateChunkFullText(Operation):
    """The backend's full-text index on document_chunks.text (no model state changes)."""

    reduces_to_sql = True
    reversible = True

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        for statement in _SQL.get(schema_editor.connection.vendor, ((), ()))[0]:
            schema_editor.execute(statement, params=None)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        for statement in _SQL.get(schema_editor.connection.vendor, ((), ()))[1]:
            schema_editor.execute(statement, params=None)

    def describe(self):
        return "Full-text index on document_chunks.text (PostgreSQL, MariaDB/MySQL, SQLite FTS5)"


class RestoreChunkFullTextTriggers(Operation):
    """Put the SQLite FTS triggers back around a migration that alters ``document_chunks``:
    SQLite alters a column by copying the table into a new one, and the triggers, which
    Django's model state does not know, stay behind with the old table. Place one before
    and one after such operations (the first restores them when the migration is reversed)."""

    reduces_to_sql = True
    reversible = True

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "sqlite":
            for statement in _SQLITE_TRIGGERS:
                schema_editor.execute(statement, params=None)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self.database_forwards(app_label, schema_editor, from_state, to_state)

    def describe(self):
        return "Restore the SQLite full-text triggers of document_chunks"


def query_terms(query: str) -> list[str]:
    """The distinct words of a query, lower-cased, at most MAX_TERMS."""
    seen: dict[str, None] = {}
    for word in re.findall(r"\w+", query.lower()):
        seen.setdefault(word, None)
    return list(seen)[:MAX_TERMS]


def _filters(tool_id, document_id) -> tuple[str, list]:
    sql, params = "", []
    if tool_id is not None:
        sql += " AND tool_id = %s"
        params.append(tool_id)
    if document_id is not None:
        sql += " AND document_id = %s"
        params.append(document_id)
    return sql, params


def keyword_search(query: str, limit: int = 10, *, tool=None, document=None, using: str | None = None):
    """``[(chunk_id, score)]``, best first, inside the active organization.

    ``score`` is the backend's own relevance (higher is better); it is comparable within
    one result list only. Raises OrgScopeError with no active organization.
    """
    org_id = current_org_id()
    terms = query_terms(query)
    limit = result_limit(limit)
    if not terms or limit <= 0:
        return []
    alias = using or router.db_for_read(DocumentChunk)
    connection = connections[alias]
    field = DocumentChunk._meta.pk

    def prep(value):
        return None if value is None else field.get_db_prep_value(as_pk(value), connection)

    tool_id, document_id = prep(tool), prep(document)
    org = field.get_db_prep_value(org_id, connection)
    vendor = connection.vendor
    if vendor == "postgresql":
        extra, params = _filters(tool_id, document_id)
        sql = (
            "SELECT id, ts_rank(search_vector, q) AS score FROM document_chunks, to_tsquery('simple', %s) q "
            f"WHERE org_id = %s AND search_vector @@ q{extra} ORDER BY score DESC, id LIMIT %s"
        )
        params = [" | ".join(_pg_lexeme(t) for t in terms), org, *params, limit]
    elif vendor == "mysql":
        extra, params = _filters(tool_id, document_id)
        words = " ".join(terms)
        sql = (
            "SELECT id, MATCH (text) AGAINST (%s IN NATURAL LANGUAGE MODE) AS score FROM document_chunks "
            f"WHERE org_id = %s AND MATCH (text) AGAINST (%s IN NATURAL LANGUAGE MODE){extra} "
            "ORDER BY score DESC, id LIMIT %s"
        )
        params = [words, org, words, *params, limit]
    elif vendor == "sqlite":
        scope = [f'scope : "o{org}"'] + [f'scope : "{p}{v}"' for p, v in (("t", tool_id), ("d", document_id)) if v]
        match = " AND ".join(scope) + " AND text : (" + " OR ".join(f'"{t}"' for t in terms) + ")"
        # Ranked and cut inside the FTS index; only the top rows are mapped to chunk ids.
        sql = (
            "SELECT i.chunk_id, r.score FROM (SELECT rowid, -bm25(document_chunks_fts, 1.0, 0.0) AS score "
            "FROM document_chunks_fts WHERE document_chunks_fts MATCH %s ORDER BY score DESC, rowid LIMIT %s) r "
            "JOIN document_chunks_fts_ids i ON i.rowid = r.rowid ORDER BY r.score DESC, r.rowid"
        )
        params = [match, limit]
    else:
        return _fallback_search(terms, limit, tool, document, alias)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [(as_pk(pk), float(score)) for pk, score in rows]


def _pg_lexeme(term: str) -> str:
    # A quoted lexeme: a word with an apostrophe or a backslash stays one literal word.
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


def _fallback_search(terms, limit, tool, document, alias):
    """SQL Server and Oracle: term frequency over a bounded set of matching rows."""
    rows = DocumentChunk.objects.using(alias).filter(reduce(or_, (Q(text__icontains=t) for t in terms)))
    if tool is not None:
        rows = rows.filter(tool_id=as_pk(tool))
    if document is not None:
        rows = rows.filter(document_id=as_pk(document))
    wanted = set(terms)
    scored = []
    for pk, text in rows.order_by().values_list("pk", "text")[:FALLBACK_CANDIDATES]:
        counts = Counter(w for w in re.findall(r"\w+", text.lower()) if w in wanted)
        if counts:
            scored.append((len(counts) + sum(counts.values()) / (1 + len(text) / 1000), pk))
    scored.sort(key=lambda pair: (-pair[0], str(pair[1])))
    return [(pk, score) for score, pk in scored[:limit]]
