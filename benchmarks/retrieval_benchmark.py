#!/usr/bin/env python
"""How fast and how exact is knowledge retrieval?

Two parts, in one run, every contender on the same clustered synthetic vectors (unit
vectors around random centres, so that recall means something):

1. ``--vectors N[,N...]`` (in memory, no database): one vector set of N × ``--dim``.
   Semantic top-10 p50/p95 and recall@10 against exact search, for the exact cache
   (``knowledge.vectors.VectorIndex``), numpy brute force on the same matrix, our faiss IVF
   (re-ranked exactly), and hnswlib and usearch HNSW graphs (``--contenders``); build
   time and memory of each. ``--orgs K`` adds the same N spread over K organizations
   (one set each, N/K vectors, searched exactly).
2. ``--db-chunks N`` (the backend of DB_TYPE, a scratch database ``<DB_NAME>_bench`` or
   a scratch SQLite file): N chunks with text and vectors in one organization, then
   end-to-end ``semantic_search``, ``keyword_hits`` and ``hybrid_search`` top-10 p50/p95
   (database round trips and hydration included), and the removed ``most_similar`` (a
   copy kept here) on at most ``--old-max`` chunks.

    .venv/bin/python benchmarks/retrieval_benchmark.py --vectors 100000,1000000 --orgs 100
    DB_TYPE=postgresql DB_HOST=127.0.0.1 DB_USER=postgres DB_NAME=af \\
        .venv/bin/python benchmarks/retrieval_benchmark.py --vectors 0 --db-chunks 100000
"""

from __future__ import annotations

import argparse
import array
import gc
import math
import os
import sys
import time
from pathlib import Path

# One thread per search for every contender (BLAS, OpenMP): the figures compare algorithms.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

# Synthetic text: common words drawn with a Zipf law from a 20,000-word vocabulary, plus a
# few words of the chunk's own topic (its cluster), which queries then ask for.
VOCABULARY = [f"w{i:05d}" for i in range(20_000)]
TOPIC_WORDS = 6


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", default="100000", help="in-memory set sizes, comma-separated (0: none)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--orgs", type=int, default=100, help="also spread each size over this many organizations")
    parser.add_argument(
        "--contenders",
        default="faiss,hnswlib,usearch",
        help="approximate indexes to measure (hnswlib and usearch only up to --graph-max)",
    )
    parser.add_argument("--graph-max", type=int, default=200_000, help="largest size the HNSW graphs are built at")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--db-chunks", type=int, default=0, help="chunks in the scratch database (0: skip)")
    parser.add_argument("--old-max", type=int, default=20_000, help="largest set the old most_similar runs on")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


# --- data ------------------------------------------------------------------------------------


def clustered(n: int, dim: int, rng, centres: np.ndarray, spread: float = 0.6, batch: int = 100_000):
    """Unit float32 vectors around ``centres`` (and the centre of each), made in batches."""
    out = np.empty((n, dim), dtype=np.float32)
    labels = rng.integers(0, len(centres), n)
    for start in range(0, n, batch):
        end = min(n, start + batch)
        block = centres[labels[start:end]] + spread * rng.standard_normal((end - start, dim), dtype=np.float32)
        out[start:end] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, labels


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):7.2f} ms  p95 {np.percentile(ms, 95):7.2f} ms"


def timed(fn, queries):
    results, times = [], []
    for q in queries:
        start = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - start)
    return results, times


def recall(found, truth) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth)]))


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


# --- part 1: in memory ------------------------------------------------------------------------


def bench_memory(n: int, args, rng):
    from django.conf import settings

    from knowledge.vectors import VectorIndex

    dim = args.dim
    centres = rng.standard_normal((max(10, n // 1000), dim)).astype(np.float32)
    matrix, _ = clustered(n, dim, rng, centres)
    queries, _ = clustered(args.queries, dim, rng, centres)
    print(f"\n== {n:,} vectors x {dim} in one set (clustered: {len(centres)} centres) ==")

    base = rss_mb()
    start = time.perf_counter()
    index = VectorIndex(dim)
    index.upsert([i.to_bytes(16, "big") for i in range(n)], matrix)
    print(f"exact cache:   load {time.perf_counter() - start:6.1f} s   memory {rss_mb() - base:7.0f} MiB")

    def row_numbers(pairs):
        return [int.from_bytes(pk, "big") for _, pk in pairs]

    exact, t_exact = timed(lambda q: row_numbers(index.search(q, 10)), queries)
    print(f"exact (ours):          {percentiles(t_exact)}  recall@10 1.000")
    view = index.matrix[: index.size]
    brute, t_brute = timed(lambda q: list(np.argsort(-(view @ q))[:10]), queries)
    print(f"numpy brute force:     {percentiles(t_brute)}  recall@10 {recall(brute, exact):.3f}  (full argsort)")

    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if "faiss" in contenders:
        before = rss_mb()
        start = time.perf_counter()
        index.build_ann()
        build = time.perf_counter() - start
        memory = rss_mb() - before
        for nprobe in sorted({8, settings.VECTOR_ANN_NPROBE, 64}):
            found, t = timed(lambda q: row_numbers(index.search(q, 10, nprobe=nprobe)), queries)
            print(
                f"faiss IVF{index.ann.nlist} nprobe {nprobe:3d}: {percentiles(t)}  recall@10 {recall(found, exact):.3f}"
                f"  build {build:6.1f} s  +{memory:.0f} MiB"
            )
        index.ann = None
    if n <= args.graph_max and "hnswlib" in contenders:
        import hnswlib

        before = rss_mb()
        start = time.perf_counter()
        graph = hnswlib.Index("ip", dim)
        graph.init_index(n, M=16, ef_construction=100)
        graph.add_items(view, np.arange(n))
        build, memory = time.perf_counter() - start, rss_mb() - before
        for ef in (40, 80):
            graph.set_ef(ef)
            found, t = timed(lambda q: _rerank(view, graph.knn_query(q, k=40)[0][0], q), queries)
            print(
                f"hnswlib M16 ef {ef:3d}:    {percentiles(t)}  recall@10 {recall(found, exact):.3f}"
                f"  build {build:6.1f} s  +{memory:.0f} MiB"
            )
        del graph
    if n <= args.graph_max and "usearch" in contenders:
        from usearch.index import Index

        before = rss_mb()
        start = time.perf_counter()
        graph = Index(ndim=dim, metric="ip", dtype="f32", connectivity=16, expansion_add=100)
        graph.add(np.arange(n), view)
        build, memory = time.perf_counter() - start, rss_mb() - before
        for ef in (40, 80):
            graph.expansion_search = ef
            found, t = timed(lambda q: _rerank(view, graph.search(q, 40).keys, q), queries)
            print(
                f"usearch M16 ef {ef:3d}:    {percentiles(t)}  recall@10 {recall(found, exact):.3f}"
                f"  build {build:6.1f} s  +{memory:.0f} MiB"
            )
        del graph

    if args.orgs > 1:
        per_org = n // args.orgs
        sets = [VectorIndex(dim) for _ in range(args.orgs)]
        for k, part in enumerate(sets):
            part.upsert(
                [i.to_bytes(16, "big") for i in range(k * per_org, (k + 1) * per_org)],
                matrix[k * per_org : (k + 1) * per_org],
            )
        targets = rng.integers(0, args.orgs, len(queries))
        _, t = timed(lambda pair: sets[pair[0]].search(pair[1], 10), list(zip(targets, queries)))
        print(f"spread over {args.orgs} organizations ({per_org:,} each, exact): {percentiles(t)}")
    index = matrix = view = None  # free them before the next size
    gc.collect()


def _rerank(matrix, candidates, q):
    candidates = np.asarray(candidates, dtype=np.int64)
    return list(candidates[np.argsort(-(matrix[candidates] @ q))[:10]])


# --- part 2: the database ---------------------------------------------------------------------


def setup_database():
    import django
    from django.conf import settings

    django.setup()
    import logging

    from django.db import connection

    logging.getLogger("agentforge.slow_query").setLevel(logging.ERROR)  # the bulk fill is slow on purpose
    base = settings.DATABASES["default"]
    if settings.DB_TYPE == "sqlite":
        name = str(Path(base["NAME"]).with_name("retrieval_bench.sqlite3"))
    else:
        name = f"{base['NAME']}_bench"
    base.setdefault("TEST", {})["NAME"] = name
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return connection


def old_most_similar(queryset, vector, limit=10):
    """The previous DocumentChunk.objects.most_similar: a model instance and a Python cosine per chunk."""

    def unpack(data):
        values = array.array("f")
        values.frombytes(bytes(data))
        return values.tolist()

    def cosine(a, b):
        dot = sum(x * y for x, y in zip(a, b))
        norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        return dot / norm if norm else 0.0

    scored = [
        (cosine(vector, unpack(c.embedding)), c)
        for c in queryset.exclude(embedding__isnull=True).filter(embedding_dim=len(vector))
    ]
    scored.sort(key=lambda pair: pair[0], reverse=True)
    return scored[:limit]


def old_hybrid_search(query, vector, limit=10, rrf_k=60):
    """The previous hybrid_search: both lists loaded as chunks (4 x limit each), then fused."""
    from knowledge.retrieval import FUSION_DEPTH, keyword_hits
    from knowledge.vectors import Hit, semantic_search

    depth = max(limit * FUSION_DEPTH, 20)
    fused = {}
    for rank, hit in enumerate(semantic_search(vector, depth), 1):
        fused[hit.chunk.pk] = Hit(hit.chunk, 1.0 / (rrf_k + rank), semantic=hit.score)
    for rank, hit in enumerate(keyword_hits(query, depth), 1):
        entry = fused.setdefault(hit.chunk.pk, Hit(hit.chunk, 0.0))
        entry.score += 1.0 / (rrf_k + rank)
    return sorted(fused.values(), key=lambda h: (-h.score, str(h.chunk.pk)))[:limit]


def bench_database(args, rng):
    from django.conf import settings
    from django.db import transaction

    from accounts.models import Organization
    from agentforge_agents.models import Tool
    from agentforge_core.tenancy import org_scope
    from knowledge import vectors
    from knowledge.models import Document, DocumentChunk
    from knowledge.retrieval import hybrid_search, keyword_hits
    from knowledge.vectors import semantic_search, stamp_unversioned

    connection = setup_database()
    n, dim = args.db_chunks, args.dim
    centres = rng.standard_normal((max(10, n // 1000), dim)).astype(np.float32)
    matrix, labels = clustered(n, dim, rng, centres)
    topic = [[f"topic{c}x{k}" for k in range(TOPIC_WORDS)] for c in range(len(centres))]
    zipf = 1.0 / np.arange(1, len(VOCABULARY) + 1)
    zipf /= zipf.sum()
    print(f"\n== {settings.DB_TYPE}: {n:,} chunks x {dim} with text, one organization ==")
    org = Organization.objects.create(name="Retrieval bench", slug="retrieval-bench")
    start = time.perf_counter()
    with org_scope(org):
        tool = Tool.objects.create(name="kb", type=Tool.Type.KNOWLEDGE)
        doc = Document.objects.create(title="bench", tool=tool)
        batch = 2000
        for first in range(0, n, batch):
            rows = []
            for i in range(first, min(n, first + batch)):
                words = [VOCABULARY[w] for w in rng.choice(len(VOCABULARY), 60, p=zipf)]
                words += [topic[labels[i]][k] for k in rng.integers(0, TOPIC_WORDS, 3)]
                rows.append(
                    DocumentChunk(
                        tool=tool,
                        document=doc,
                        chunk_id=str(i),
                        index_position=i,
                        text=" ".join(words),
                        embedding=matrix[i].astype("<f4").tobytes(),
                        embedding_dim=dim,
                        embedding_model="bench",
                    )
                )
            with transaction.atomic():
                DocumentChunk.objects.bulk_create(rows)
    stamp_unversioned()  # bulk_create bypasses set_embeddings: stamp them the supported way
    print(f"fill: {time.perf_counter() - start:.1f} s")
    # Statistics, as autovacuum gathers them within a minute of a bulk load: without them
    # PostgreSQL's planner scans the organization's index instead of the full-text one.
    with connection.cursor() as cursor:
        cursor.execute(
            {"postgresql": "ANALYZE document_chunks", "mysql": "ANALYZE TABLE document_chunks"}.get(
                connection.vendor, "ANALYZE"
            )
        )
        if connection.vendor == "mysql":
            cursor.fetchall()
    queries, q_labels = clustered(args.queries, dim, rng, centres)
    texts = [" ".join(topic[label][k] for k in rng.integers(0, TOPIC_WORDS, 2)) for label in q_labels]
    with connection.cursor() as cursor:
        _, t = timed(lambda _: cursor.execute("SELECT 1"), range(50))
    print(f"reference, one round trip (SELECT 1): {percentiles(t)}")
    with org_scope(org):
        start = time.perf_counter()
        semantic_search(queries[0], 10)
        print(f"first search (cache load from the database, index build): {time.perf_counter() - start:.1f} s")
        index = next(iter(vectors._indexes.values()))
        ann, index.ann = index.ann, None
        exact = [[pk for _, pk in index.search(q, 10)] for q in queries]
        index.ann = ann
        found, t = timed(lambda q: semantic_search(q, 10), queries)
        kind = "approximate" if index.ann is not None else "exact"
        got = [[h.chunk.pk.bytes for h in hits] for hits in found]

        # Relevant: a chunk of the query's own topic (cluster).
        def precision(results):
            return np.mean(
                [
                    np.mean([labels[int(h.chunk.chunk_id)] == want for h in hits]) if hits else 0.0
                    for hits, want in zip(results, q_labels)
                ]
            )

        print(
            f"semantic_search ({kind}): {percentiles(t)}  recall@10 {recall(got, exact):.3f}"
            f"  topic precision@10 {precision(found):.3f}"
        )
        found, t = timed(lambda s: keyword_hits(s, 10), texts)
        print(f"keyword_hits:          {percentiles(t)}  topic precision@10 {precision(found):.3f}")
        found, t = timed(lambda pair: hybrid_search(pair[0], pair[1], 10), list(zip(texts, queries)))
        print(f"hybrid_search (RRF):   {percentiles(t)}  topic precision@10 {precision(found):.3f}")
        found, t = timed(lambda pair: old_hybrid_search(pair[0], pair[1], 10), list(zip(texts, queries)))
        print(f"old hybrid (both lists loaded): {percentiles(t)}  topic precision@10 {precision(found):.3f}")
        old_n = min(n, args.old_max)
        subset = DocumentChunk.objects.filter(index_position__lt=old_n)
        _, t = timed(lambda q: old_most_similar(subset, q.tolist()), queries[:5])
        print(f"old most_similar on {old_n:,} chunks: {percentiles(t)}")
    connection.creation.destroy_test_db(settings.DATABASES["default"]["NAME"], verbosity=0, keepdb=False)


def main():
    args = parse_args()
    import django

    django.setup()
    rng = np.random.default_rng(args.seed)
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, numpy {np.__version__}; "
        "1 thread per search"
    )
    for n in (int(v) for v in args.vectors.split(",") if int(v) > 0):
        bench_memory(n, args, rng)
    if args.db_chunks:
        bench_database(args, rng)


if __name__ == "__main__":
    main()
