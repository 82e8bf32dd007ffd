"""Chunk embeddings: storing them, and exact or approximate cosine search inside one organization.

The vectors in ``document_chunks`` are the source of truth on every backend. Each process
keeps, per (organization, tool, embedding model), a cache: the normalised float32 matrix
of that set and, from ``VECTOR_ANN_MIN_VECTORS`` vectors, a faiss IVF index over it.
A search reads the set's version (``vector_sets``, one small query) and loads only the
rows stamped with a newer version, so inserts and updates from any process show up
without a full reload. Rows that were deleted or moved to another set are found out when
the candidates are read back through the scoped manager, with their stored vectors: a
result always comes from the active organization's rows and is scored from the database,
whatever state a cache is in. ``rebuild_vector_index`` writes the caches to
``VECTOR_INDEX_DIR`` so that processes start from a file instead of the whole table.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections, router, transaction

from agentforge_core.tenancy import current_org_id, org_scope, unscoped
from knowledge.models import DocumentChunk, VectorSet, as_pk, result_limit, tool_key


def _faiss():
    # Imported on first use: about a second of start-up that commands such as dbhealth, and
    # processes whose sets all stay under VECTOR_ANN_MIN_VECTORS, never need.
    import faiss

    return faiss


# Ids are read and written in batches of this size (IN lists, executemany).
BATCH = 1000
# The approximate index returns this many candidates per result wanted, before re-ranking.
ANN_OVERFETCH = 4


class EmbeddingError(ValueError):
    """Vectors that cannot be stored or searched (shape, values, model, dimension, chunk)."""


def as_matrix(vectors, dimension: int | None = None) -> np.ndarray:
    """``vectors`` (a sequence of sequences, or a 2-D array) as a C-contiguous float32 matrix."""
    if not isinstance(vectors, np.ndarray):
        vectors = list(vectors)
        try:
            lengths = [len(v) for v in vectors]
        except TypeError:
            raise EmbeddingError("vectors must be sequences of numbers") from None
        odd = next((i for i, n in enumerate(lengths) if n != lengths[0]), None)
        if odd is not None:
            raise EmbeddingError(
                f"vectors must have equal lengths: vector {odd} has {lengths[odd]}, vector 0 {lengths[0]}"
            )
    try:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
            matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(f"vectors must be sequences of numbers: {exc}") from None
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise EmbeddingError(f"vectors must be a non-empty list of equal-length vectors, got shape {matrix.shape}")
    if dimension is not None and matrix.shape[1] != dimension:
        raise EmbeddingError(f"expected vectors of dimension {dimension}, got {matrix.shape[1]}")
    if not np.isfinite(matrix).all():
        row = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise EmbeddingError(f"vector {row} holds a NaN or an infinity (or a value beyond float32)")
    return np.ascontiguousarray(matrix)


def normalised(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero vector stays zero: it scores 0 against anything)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


def _batches(items, size=BATCH):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- storing -------------------------------------------------------------------------------


def set_embeddings(chunks, vectors, model: str, *, using: str | None = None) -> int:
    """Set or replace the embeddings of chunks of the active organization, in one transaction.

    ``chunks`` are DocumentChunk objects or ids, ``vectors`` one vector per chunk (stored
    as float32 little-endian), ``model`` the embedding model that made them. Every vector
    must have the same dimension, and the one this model already has in the organization.
    Raises EmbeddingError (nothing written) for a bad vector, an unknown chunk or a chunk of
    another organization, and OrgScopeError with no active organization.
    """
    org_id = current_org_id()
    if not isinstance(model, str) or len(model) > DocumentChunk._meta.get_field("embedding_model").max_length:
        raise EmbeddingError(f"embedding model must be a string of at most 100 characters, got {model!r}")
    ids = [as_pk(chunk) for chunk in chunks]
    matrix = as_matrix(vectors) if ids else np.zeros((0, 1), dtype=np.float32)
    if len(ids) != len(matrix):
        raise EmbeddingError(f"{len(ids)} chunks but {len(matrix)} vectors")
    if len(set(ids)) != len(ids):
        raise EmbeddingError("a chunk appears twice in one call")
    if not ids:
        return 0
    dimension = matrix.shape[1]
    alias = using or router.db_for_write(DocumentChunk)
    little_endian = matrix.astype("<f4", copy=False)
    with transaction.atomic(using=alias):
        tools: dict[uuid.UUID, object] = {}
        for batch in _batches(ids):
            # By primary key, then the organization checked here (see load_chunks).
            rows = DocumentChunk.all_orgs.using(alias).filter(pk__in=batch).values_list("pk", "tool_id", "org_id")
            tools.update((pk, tool_id) for pk, tool_id, owner in rows if owner == org_id)
        missing = [pk for pk in ids if pk not in tools]
        if missing:
            raise EmbeddingError(f"chunk {missing[0]} does not exist in this organization ({len(missing)} missing)")
        versions = {}
        for tool_id in sorted(set(tools.values()), key=str):
            try:
                versions[tool_id] = VectorSet.bump(org_id, tool_id, model, dimension)
            except ValueError as exc:
                raise EmbeddingError(str(exc)) from None
        connection = connections[alias]
        field = DocumentChunk._meta.pk
        binary = DocumentChunk._meta.get_field("embedding")
        org = field.get_db_prep_value(org_id, connection)
        rows = [
            (
                binary.get_db_prep_value(little_endian[i].tobytes(), connection),
                dimension,
                model,
                versions[tools[pk]],
                field.get_db_prep_value(pk, connection),
                org,
            )
            for i, pk in enumerate(ids)
        ]
        sql = (
            "UPDATE document_chunks SET embedding = %s, embedding_dim = %s, embedding_model = %s, "
            "vector_version = %s WHERE id = %s AND org_id = %s"
        )
        with connection.cursor() as cursor:
            for batch in _batches(rows):
                cursor.executemany(sql, batch)
    return len(ids)


async def aset_embeddings(chunks, vectors, model: str, *, using: str | None = None) -> int:
    """:func:`set_embeddings` for async code (the active organization follows the context)."""
    return await sync_to_async(set_embeddings)(list(chunks), vectors, model, using=using)


# --- the per-process cache -------------------------------------------------------------------


class VectorIndex:
    """One vector set in memory: unit rows, their chunk ids, and an optional IVF index.

    Rows are only appended: a changed vector gets a new row and its old row is marked dead,
    so the approximate index never needs an in-place update; ``compact`` drops dead rows.
    """

    def __init__(self, dimension: int):
        self.dimension = dimension
        self.version = 0
        self.size = 0
        self.matrix = np.zeros((0, dimension), dtype=np.float32)
        self.ids = np.zeros(0, dtype="V16")  # raw UUID bytes (S16 would drop trailing zeros)
        self.alive = np.zeros(0, dtype=bool)
        self.rows: dict[bytes, int] = {}
        self.ann = None
        self.loaded = False  # filled once (from its file and the database); then deltas only
        self.lock = threading.RLock()

    @property
    def live(self) -> int:
        return len(self.rows)

    def _grow(self, extra: int):
        need = self.size + extra
        if need <= len(self.matrix):
            return
        capacity = max(need, int(len(self.matrix) * 1.5), 1024)
        for name in ("matrix", "ids", "alive"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)

    def upsert(self, ids: list[bytes], unit: np.ndarray):
        """Add or replace vectors (already normalised); an unchanged vector is left alone."""
        keep = []
        for i, key in enumerate(ids):
            row = self.rows.get(key)
            if row is not None:
                if np.array_equal(self.matrix[row], unit[i]):
                    continue
                self.alive[row] = False
            keep.append(i)
        if not keep:
            return
        if len(keep) != len(ids):
            ids, unit = [ids[i] for i in keep], unit[keep]
        self._grow(len(ids))
        start, end = self.size, self.size + len(ids)
        self.matrix[start:end] = unit
        self.ids[start:end] = ids
        self.alive[start:end] = True
        self.rows.update(zip(ids, range(start, end)))
        self.size = end
        if self.ann is not None:
            self.ann.add_with_ids(unit, np.arange(start, end, dtype=np.int64))

    def discard(self, ids):
        for key in ids:
            row = self.rows.pop(key, None)
            if row is not None:
                self.alive[row] = False

    def compact(self):
        """Drop dead rows (and the approximate index, which numbers rows)."""
        self.ann = None
        if self.live == self.size:
            return  # nothing to drop: no copy of a big matrix
        keep = np.flatnonzero(self.alive[: self.size])
        self.matrix, self.ids = self.matrix[keep].copy(), self.ids[keep].copy()
        self.alive = np.ones(len(keep), dtype=bool)
        self.size = len(keep)
        self.rows = {key: row for row, key in enumerate(self.ids.tolist())}

    def build_ann(self, nlist: int | None = None):
        """A faiss IVF (inverted lists over k-means cells) over the live rows."""
        self.compact()
        n = self.size
        nlist = nlist or int(min(4096, max(16, np.sqrt(n))))
        faiss = _faiss()
        quantizer = faiss.IndexFlatIP(self.dimension)
        ann = faiss.IndexIVFFlat(quantizer, self.dimension, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = self.matrix[: self.size]
        if n > nlist * 64:
            sample = sample[np.random.default_rng(0).choice(n, nlist * 64, replace=False)]
        ann.train(sample)
        ann.add_with_ids(self.matrix[: self.size], np.arange(n, dtype=np.int64))
        self.ann = ann

    def search(self, unit_query: np.ndarray, k: int, nprobe: int | None = None) -> list[tuple[float, bytes]]:
        """The k best live rows as (cosine, id), best first."""
        if self.size == 0 or k <= 0:
            return []
        if self.ann is not None:
            self.ann.nprobe = nprobe or settings.VECTOR_ANN_NPROBE
            _, found = self.ann.search(unit_query[None, :], k * ANN_OVERFETCH)
            rows = found[0][found[0] >= 0]
            rows = rows[self.alive[rows]]
            scores = self.matrix[rows] @ unit_query  # exact re-rank of the candidates
        else:
            scores = self.matrix[: self.size] @ unit_query
            if self.live != self.size:
                scores[~self.alive[: self.size]] = -np.inf
            rows = np.arange(self.size)
        if len(rows) > k:
            top = np.argpartition(-scores, k - 1)[:k]
            rows, scores = rows[top], scores[top]
        order = np.argsort(-scores, kind="stable")
        return [(float(scores[i]), self.ids[rows[i]].tobytes()) for i in order if np.isfinite(scores[i])]

    # Files: the live rows and the IVF index, written atomically.
    def save(self, path: Path, meta: dict):
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.live != self.size:
            had_ann = self.ann is not None
            self.compact()
            if had_ann:
                self.build_ann()
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            matrix=self.matrix[: self.size],
            ids=self.ids[: self.size],
            meta=np.array(json.dumps({**meta, "version": self.version, "vectors": self.size})),
        )
        os.replace(tmp, path.with_suffix(".npz"))
        ann_path = path.with_suffix(".ivf")
        if self.ann is not None:
            _faiss().write_index(self.ann, str(ann_path) + ".tmp")
            os.replace(str(ann_path) + ".tmp", ann_path)
        elif ann_path.exists():
            ann_path.unlink()

    @classmethod
    def load(cls, path: Path) -> tuple["VectorIndex", dict] | None:
        try:
            with np.load(path.with_suffix(".npz")) as data:
                meta = json.loads(str(data["meta"]))
                matrix, ids = data["matrix"], data["ids"]
        except (OSError, ValueError, KeyError):
            return None
        index = cls(matrix.shape[1])
        index.matrix, index.ids = np.ascontiguousarray(matrix), ids
        index.alive = np.ones(len(ids), dtype=bool)
        index.size = len(ids)
        index.rows = {key: row for row, key in enumerate(ids.tolist())}
        index.version = meta["version"]
        ann_path = path.with_suffix(".ivf")
        if ann_path.exists():
            index.ann = _faiss().read_index(str(ann_path))
        return index, meta


def index_path(org_id, key: str, model: str) -> Path:
    digest = hashlib.sha256(model.encode()).hexdigest()[:16]
    return Path(settings.VECTOR_INDEX_DIR) / str(org_id) / f"{key or 'no-tool'}-{digest}"


_indexes: dict[tuple, VectorIndex] = {}
_indexes_lock = threading.Lock()


def clear_cache():
    """Forget every cached set in this process (tests; after a restore)."""
    with _indexes_lock:
        _indexes.clear()


def _set_rows(org_id, key: str, model: str, dimension: int):
    rows = DocumentChunk.objects.filter(org_id=org_id, embedding_model=model, embedding_dim=dimension)
    rows = rows.exclude(embedding=None)
    return rows.filter(tool__isnull=True) if key == "" else rows.filter(tool_id=uuid.UUID(key))


def _load_rows(index: VectorIndex, rows):
    ids, vectors = [], []

    def flush():
        if ids:
            index.upsert(ids, normalised(np.frombuffer(b"".join(vectors), dtype="<f4").reshape(len(ids), -1)))
            ids.clear()
            vectors.clear()

    for pk, data in rows.order_by().values_list("pk", "embedding").iterator(chunk_size=5000):
        ids.append(pk.bytes)
        vectors.append(bytes(data))
        if len(ids) >= 5000:
            flush()
    flush()


def cached_index(org_id, key: str, model: str, dimension: int, version: int) -> VectorIndex:
    """The set's cache in this process, brought up to ``version`` (call inside org_scope)."""
    cache_key = (org_id, key, model, dimension)
    with _indexes_lock:
        index = _indexes.get(cache_key)
        if index is None:
            index = _indexes[cache_key] = VectorIndex(dimension)
    with index.lock:
        if index.loaded and index.version > version:
            # The database went back in time (a restore): start again from it.
            index = _replace(cache_key, index, VectorIndex(dimension))
        if index.loaded and index.version == version:
            return index
        rows = _set_rows(org_id, key, model, dimension)
        if not index.loaded:
            loaded = VectorIndex.load(index_path(org_id, key, model))
            # A file newer than the database (restored from an older backup) is ignored.
            if (
                loaded
                and loaded[1].get("model") == model
                and loaded[0].dimension == dimension
                and loaded[0].version <= version
            ):
                index = _replace(cache_key, index, loaded[0])
                rows = rows.filter(vector_version__gt=index.version)
        else:
            rows = rows.filter(vector_version__gt=index.version)
        _load_rows(index, rows)
        index.version = version
        index.loaded = True
        if index.ann is None and index.live >= settings.VECTOR_ANN_MIN_VECTORS:
            index.build_ann()
        return index


def _replace(cache_key, old: VectorIndex, new: VectorIndex) -> VectorIndex:
    new.lock = old.lock
    with _indexes_lock:
        _indexes[cache_key] = new
    return new


# --- searching ----------------------------------------------------------------------------------


@dataclass
class Hit:
    """One retrieved chunk (``chunk.document`` is loaded) and its score: the cosine for a
    semantic search, the engine's relevance for a keyword search, the fused score for a
    hybrid one (which keeps both parts in ``semantic`` and ``keyword``)."""

    chunk: DocumentChunk
    score: float
    semantic: float | None = None
    keyword: float | None = None

    @property
    def document(self):
        return self.chunk.document


def load_chunks(ids, **filters) -> dict:
    """The active organization's chunks (with their documents) among ``ids``, by id.

    Looked up by primary key, then kept only when they belong to the active organization:
    with the organization in the WHERE clause, SQLite's planner walks the organization's
    index (every chunk of a big organization) instead of the primary key.
    """
    org_id = current_org_id()
    found = {}
    for batch in _batches(list(ids)):
        rows = DocumentChunk.all_orgs.filter(pk__in=batch, **filters).select_related("document")
        # A document's full text loads only if asked for (hits name their document, rarely read it).
        for chunk in rows.defer("document__content"):
            if chunk.org_id == org_id:
                found[chunk.pk] = chunk
    return found


def _query(vector) -> tuple[np.ndarray, np.ndarray]:
    q = as_matrix([vector])[0]
    return q, normalised(q[None, :])[0]


def _exact_scores(chunks, unit_query) -> dict:
    """Cosine of each chunk's stored vector against the query, from the database bytes."""
    scores = {}
    for chunk in chunks:
        stored = np.frombuffer(bytes(chunk.embedding), dtype="<f4")
        norm = float(np.linalg.norm(stored))
        scores[chunk.pk] = float(stored @ unit_query) / norm if norm else 0.0
    return scores


def semantic_search(
    vector, limit: int = 10, *, model: str | None = None, tool=None, document=None, threshold: float | None = None
) -> list[Hit]:
    """Chunks of the active organization closest to ``vector`` by cosine, best first.

    ``model`` names the embedding model (needed when several models share the vector's
    dimension in the organization); ``tool`` / ``document`` narrow the search; hits under
    ``threshold`` are dropped. Raises OrgScopeError with no active organization.
    """
    org_id = current_org_id()
    query, unit = _query(vector)
    dimension = len(query)
    limit = result_limit(limit)
    if limit <= 0 or not unit.any():
        return []
    sets = VectorSet.objects.filter(dimension=dimension)
    if model is not None:
        sets = sets.filter(embedding_model=model)
    if tool is not None:
        sets = sets.filter(tool_key=tool_key(as_pk(tool)))
    sets = list(sets.values_list("tool_key", "embedding_model", "version"))
    found = sorted({m for _, m, _ in sets})
    if len(found) > 1:
        raise EmbeddingError(
            f"vectors of several models have dimension {dimension} here ({', '.join(found)}): name one"
        )
    if not sets:
        return []
    model = found[0]
    if document is not None:
        rows = DocumentChunk.objects.filter(embedding_model=model, embedding_dim=dimension, document_id=as_pk(document))
        return _search_document(rows.select_related("document"), unit, limit, tool, threshold)
    indexes = {key: cached_index(org_id, key, model, dimension, version) for key, _, version in sets}
    hits: list[Hit] = []
    for attempt in range(8):
        candidates = []
        for key, index in indexes.items():
            with index.lock:
                candidates += [(score, pk, key) for score, pk in index.search(unit, limit)]
        candidates.sort(key=lambda c: -c[0])
        candidates = candidates[:limit]
        wanted = {uuid.UUID(bytes=pk): key for _, pk, key in candidates}
        chunks = load_chunks(wanted, embedding_model=model, embedding_dim=dimension)
        # A chunk deleted, moved to another tool or re-embedded by another model since the
        # cache saw it is dropped from that cache and the search runs again.
        stale = [pk for pk, key in wanted.items() if pk not in chunks or tool_key(chunks[pk].tool_id) != key]
        for pk in stale:
            with indexes[wanted[pk]].lock:
                indexes[wanted[pk]].discard([pk.bytes])
        if stale and attempt < 7:
            continue
        valid = [chunks[pk] for pk in wanted if pk not in stale]
        scores = _exact_scores(valid, unit)
        hits = sorted(
            (Hit(c, scores[c.pk], semantic=scores[c.pk]) for c in valid), key=lambda h: (-h.score, str(h.chunk.pk))
        )
        break
    if threshold is not None:
        hits = [h for h in hits if h.score >= threshold]
    return hits


def _search_document(rows, unit, limit, tool, threshold) -> list[Hit]:
    if tool is not None:
        rows = rows.filter(tool_id=as_pk(tool))
    chunks = list(rows.exclude(embedding=None))
    scores = _exact_scores(chunks, unit)
    hits = sorted(
        (Hit(c, scores[c.pk], semantic=scores[c.pk]) for c in chunks), key=lambda h: (-h.score, str(h.chunk.pk))
    )[:limit]
    return [h for h in hits if threshold is None or h.score >= threshold]


# --- maintenance ----------------------------------------------------------------------------------


def stamp_unversioned() -> int:
    """Give a version to vectors written around ``set_embeddings`` / ``save`` (bulk_create,
    raw SQL, a restore), which searches would otherwise never load. Returns rows stamped."""
    stamped = 0
    with unscoped():
        groups = (
            DocumentChunk.all_orgs.filter(vector_version__isnull=True)
            .exclude(embedding=None)
            .order_by()
            .values_list("org_id", "tool_id", "embedding_model", "embedding_dim")
            .distinct()
        )
        for org_id, tool_id, model, dimension in list(groups):
            with transaction.atomic():
                version = VectorSet.bump(org_id, tool_id, model, dimension)
                stamped += (
                    DocumentChunk.all_orgs.filter(
                        org_id=org_id,
                        tool_id=tool_id,
                        embedding_model=model,
                        embedding_dim=dimension,
                        vector_version__isnull=True,
                    )
                    .exclude(embedding=None)
                    .update(vector_version=version)
                )
    return stamped


def rebuild(org=None, report=lambda line: None) -> list[dict]:
    """Rewrite every set's file (one organization, or all); run :func:`stamp_unversioned` first."""
    with unscoped():
        sets = VectorSet.all_orgs.all()
        if org is not None:
            sets = sets.for_org(org)
        sets = list(sets.order_by("org_id", "tool_key", "embedding_model"))
    done = []
    for vector_set in sets:
        with org_scope(vector_set.org_id):
            index = VectorIndex(vector_set.dimension)
            _load_rows(
                index,
                _set_rows(vector_set.org_id, vector_set.tool_key, vector_set.embedding_model, vector_set.dimension),
            )
        index.version = vector_set.version
        if index.live >= settings.VECTOR_ANN_MIN_VECTORS:
            index.build_ann()
        path = index_path(vector_set.org_id, vector_set.tool_key, vector_set.embedding_model)
        index.save(
            path, {"model": vector_set.embedding_model, "org": str(vector_set.org_id), "tool": vector_set.tool_key}
        )
        entry = {
            "org": str(vector_set.org_id),
            "tool": vector_set.tool_key or None,
            "model": vector_set.embedding_model,
            "version": vector_set.version,
            "vectors": index.live,
            "approximate": index.ann is not None,
        }
        report(entry)
        done.append(entry)
    return done


def freshness(lag_ratio: float = 0.1) -> dict:
    """The files against the database: what ``dbhealth`` reports.

    Not ok when vectors carry no version (no search sees them), when a file is ahead of
    the database (restored from an older backup) or when a set has moved on by more than
    ``lag_ratio`` of its vectors since its file was written (every process would load the
    difference row by row at start-up).
    """
    with unscoped():
        unversioned = DocumentChunk.all_orgs.filter(vector_version__isnull=True).exclude(embedding=None).count()
        sets = list(VectorSet.all_orgs.values_list("org_id", "tool_key", "embedding_model", "dimension", "version"))
        problems, files = [], 0
        for org_id, key, model, dimension, version in sets:
            path = index_path(org_id, key, model).with_suffix(".npz")
            if not path.exists():
                continue
            files += 1
            try:
                with np.load(path) as data:
                    meta = json.loads(str(data["meta"]))
            except (OSError, ValueError, KeyError) as exc:
                problems.append(f"{path.name}: unreadable ({exc})")
                continue
            label = f"set {model or '(no model)'} / {key or '(no tool)'} of organization {org_id}"
            if meta["version"] > version:
                problems.append(f"{label}: file at version {meta['version']} is ahead of the database ({version})")
                continue
            newer = _set_rows(org_id, key, model, dimension).filter(vector_version__gt=meta["version"]).count()
            if newer > lag_ratio * max(meta["vectors"], 1):
                problems.append(f"{label}: {newer} vectors newer than its file ({meta['vectors']})")
    if unversioned:
        problems.insert(0, f"{unversioned} chunk vectors have no version (written around set_embeddings)")
    return {
        "ok": not problems,
        "sets": len(sets),
        "files": files,
        "unversioned_vectors": unversioned,
        "problems": problems,
        "directory": str(settings.VECTOR_INDEX_DIR),
    }
