"""Knowledge retrieval: storing embeddings, semantic (exact and approximate), keyword and
hybrid search, kb_config, the caches following writes, and organization isolation."""

from __future__ import annotations

import asyncio
import itertools
import json
import struct

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connection, connections
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from agentforge_agents.models import Tool
from agentforge_core.tenancy import OrgScopeError, org_scope
from knowledge import vectors
from knowledge.fulltext import keyword_search, query_terms
from knowledge.models import Document, DocumentChunk, VectorSet
from knowledge.retrieval import asearch_knowledge, hybrid_search, keyword_hits, search_knowledge
from knowledge.vectors import EmbeddingError, aset_embeddings, semantic_search, set_embeddings

_seq = itertools.count(1)


@pytest.fixture(autouse=True)
def fresh_caches(tmp_path, settings):
    settings.VECTOR_INDEX_DIR = str(tmp_path / "vector-index")
    vectors.clear_cache()
    yield
    vectors.clear_cache()


def make_kb(org, *, kb_config=None, chunks=()):
    """A knowledge tool with one document and chunks [(chunk_id, text)] in ``org``."""
    with org_scope(org):
        tool = Tool.objects.create(name=f"kb {next(_seq)}", type=Tool.Type.KNOWLEDGE, kb_config=kb_config)
        doc = Document.objects.create(title=f"doc {next(_seq)}", tool=tool)
        made = DocumentChunk.objects.bulk_create(
            DocumentChunk(chunk_id=cid, text=text, tool=tool, document=doc, index_position=i)
            for i, (cid, text) in enumerate(chunks)
        )
    return tool, doc, made


def ids(hits):
    return [h.chunk.chunk_id for h in hits]


# --- storing embeddings ------------------------------------------------------------------------


@pytest.mark.django_db
def test_set_embeddings_stores_float32_with_model_dimension_and_version(make_org):
    org = make_org()
    tool, _, chunks = make_kb(org, chunks=[("a", ""), ("b", "")])
    with org_scope(org):
        assert set_embeddings(chunks, [[0.1, 0.2, 0.3], [1, 2, 3]], "text-embedding-3-small") == 2
        stored = {c.chunk_id: c for c in DocumentChunk.objects.all()}
        vector_set = VectorSet.objects.get()
    assert bytes(stored["a"].embedding) == struct.pack("<3f", 0.1, 0.2, 0.3)
    assert (stored["b"].embedding_dim, stored["b"].embedding_model) == (3, "text-embedding-3-small")
    assert (vector_set.tool_key, vector_set.dimension, vector_set.version) == (str(tool.pk), 3, 1)
    assert stored["a"].vector_version == stored["b"].vector_version == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "vectors_, model, message",
    [
        ([[1, 0], [0, 1, 0]], "m", "equal lengths: vector 1 has 3, vector 0 2"),
        ([[1, 0, float("nan")], [0, 1, 0]], "m", "vector 0 holds a NaN"),
        ([[1, 0, 1e39], [0, 1, 0]], "m", "vector 0 holds a NaN or an infinity"),
        ([[1, 0, 0]], "m", "2 chunks but 1 vectors"),
        ([[1, 0, 0, 0], [0, 1, 0, 0]], "m", "has dimension 3 in this organization, got 4"),
        ([["x", 0, 0], [0, 1, 0]], "m", "sequences of numbers"),
    ],
)
def test_set_embeddings_refuses_bad_input_and_writes_nothing(make_org, vectors_, model, message):
    org = make_org()
    _, _, chunks = make_kb(org, chunks=[("a", ""), ("b", ""), ("c", "")])
    with org_scope(org):
        set_embeddings(chunks[2:], [[1, 1, 1]], "m")
        with pytest.raises(EmbeddingError, match=message):
            set_embeddings(chunks[:2], vectors_, model)
        assert list(DocumentChunk.objects.exclude(embedding=None).values_list("chunk_id", flat=True)) == ["c"]
        assert VectorSet.objects.get().version == 1


@pytest.mark.django_db
def test_set_embeddings_refuses_another_organizations_chunk_and_writes_nothing(make_org):
    mine, other = make_org(), make_org()
    _, _, my_chunks = make_kb(mine, chunks=[("a", "")])
    _, _, their_chunks = make_kb(other, chunks=[("theirs", "")])
    with org_scope(mine):
        with pytest.raises(EmbeddingError, match=f"chunk {their_chunks[0].pk} does not exist in this organization"):
            set_embeddings([my_chunks[0], their_chunks[0].pk], [[1, 0], [0, 1]], "m")
        assert not DocumentChunk.objects.exclude(embedding=None).exists()
    assert DocumentChunk.all_orgs.get(pk=their_chunks[0].pk).embedding is None
    assert not VectorSet.all_orgs.exists()


@pytest.mark.django_db
def test_storing_and_searching_fail_closed_without_an_organization(make_org):
    org = make_org()
    _, _, chunks = make_kb(org, chunks=[("a", "alpha")])
    for call in (
        lambda: set_embeddings(chunks, [[1, 0]], "m"),
        lambda: semantic_search([1, 0]),
        lambda: keyword_search("alpha"),
        lambda: hybrid_search("alpha", [1, 0]),
        lambda: search_knowledge(chunks[0].tool_id, "alpha", [1, 0]),
    ):
        with pytest.raises(OrgScopeError):
            call()


@pytest.mark.django_db(transaction=True)
def test_async_code_stores_and_searches_inside_org_scope(make_org):
    org = make_org()
    _, _, chunks = make_kb(org, chunks=[("a", ""), ("b", "")])

    async def main():
        try:
            async with org_scope(org):
                await aset_embeddings(chunks, [[1, 0], [0, 1]], "m")
                return await asearch_knowledge(chunks[0].tool_id, "", [0.9, 0.1], search_type="semantic")
        finally:
            # The ORM ran in asgiref's worker thread: close its connection.
            await sync_to_async(connections.close_all)()

    assert ids(asyncio.run(main())) == ["a", "b"]


# --- semantic search ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_models_and_dimensions_never_meet_in_one_search(make_org):
    org = make_org()
    _, _, chunks = make_kb(org, chunks=[("small", ""), ("large", ""), ("wide", "")])
    with org_scope(org):
        set_embeddings(chunks[:1], [[1, 0, 0]], "small")
        set_embeddings(chunks[1:2], [[1, 0, 0]], "large")
        set_embeddings(chunks[2:], [[1, 0, 0, 0]], "wide")
        with pytest.raises(EmbeddingError, match="several models have dimension 3 here"):
            semantic_search([1, 0, 0])
        assert ids(semantic_search([1, 0, 0], model="small")) == ["small"]
        assert ids(semantic_search([1, 0, 0], model="large")) == ["large"]
        assert ids(semantic_search([1, 0, 0, 0])) == ["wide"]
        assert semantic_search([1, 0, 0, 0], model="small") == []


@pytest.mark.django_db
def test_semantic_search_narrows_to_a_tool_or_a_document_and_applies_the_threshold(make_org):
    org = make_org()
    tool_a, doc_a, a = make_kb(org, chunks=[("a1", ""), ("a2", "")])
    tool_b, doc_b, b = make_kb(org, chunks=[("b1", "")])
    with org_scope(org):
        set_embeddings(a + b, [[1, 0], [0.6, 0.8], [0.8, 0.6]], "m")
        assert ids(semantic_search([1, 0])) == ["a1", "b1", "a2"]
        assert ids(semantic_search([1, 0], tool=tool_a)) == ["a1", "a2"]
        assert ids(semantic_search([1, 0], document=doc_b)) == ["b1"]
        assert ids(semantic_search([1, 0], threshold=0.7)) == ["a1", "b1"]
        hits = semantic_search([1, 0], limit=1)
    assert hits[0].document == doc_a and hits[0].score == pytest.approx(1.0)


@pytest.mark.django_db
def test_the_cache_follows_inserts_updates_moves_and_deletes_without_a_full_reload(make_org):
    org = make_org()
    tool, doc, chunks = make_kb(org, chunks=[(f"c{i}", "") for i in range(5)])
    other_tool, _, _ = make_kb(org)
    with org_scope(org):
        set_embeddings(chunks, [[1, i / 10] for i in range(5)], "m")
        assert ids(semantic_search([0, 1], limit=2)) == ["c4", "c3"]
        index = vectors._indexes[(org.pk, str(tool.pk), "m", 2)]
        assert index.size == 5

        new = DocumentChunk.objects.create(chunk_id="new", tool=tool, document=doc)
        set_embeddings([new], [[0, 1]], "m")  # insert
        assert ids(semantic_search([0, 1], limit=2)) == ["new", "c4"]
        assert index.size == 6  # one row loaded, not the whole set again

        set_embeddings([chunks[0]], [[-1, 5]], "m")  # update
        hits = semantic_search([-0.2, 1], limit=2)
        assert ids(hits) == ["c0", "new"]
        assert hits[0].score == pytest.approx(1.0)
        assert index.size == 7 and index.live == 6

        DocumentChunk.objects.filter(chunk_id="new").delete()  # delete (no version bump)
        assert ids(semantic_search([0, 1], limit=2)) == ["c0", "c4"]
        assert index.live == 5

        moved = DocumentChunk.objects.get(chunk_id="c0")  # move to another tool
        moved.tool = other_tool
        moved.save()
        assert ids(semantic_search([0, 1], limit=1, tool=tool)) == ["c4"]
        assert ids(semantic_search([0, 1], limit=1, tool=other_tool)) == ["c0"]
        assert ids(semantic_search([0, 1], limit=2)) == ["c0", "c4"]


@pytest.mark.django_db
def test_scores_come_from_the_stored_vectors_even_when_a_cache_is_stale(make_org):
    org = make_org()
    _, _, chunks = make_kb(org, chunks=[("a", ""), ("b", "")])
    with org_scope(org):
        set_embeddings(chunks, [[1, 0], [0.6, 0.8]], "m")
        assert ids(semantic_search([1, 0])) == ["a", "b"]
        # Written around set_embeddings: no version, so the cache does not reload it.
        DocumentChunk.objects.filter(chunk_id="a").update(embedding=struct.pack("<2f", 0, 1))
        hits = semantic_search([1, 0])
    assert [(h.chunk.chunk_id, round(h.score, 6)) for h in hits] == [("b", 0.6), ("a", 0.0)]


def _clustered(n, dim, rng, centres=8):
    centre = rng.standard_normal((centres, dim))
    return (centre[rng.integers(0, centres, n)] + 0.4 * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.mark.django_db
@override_settings(VECTOR_ANN_MIN_VECTORS=300, VECTOR_ANN_NPROBE=4096)
def test_the_approximate_index_probing_every_list_returns_the_exact_top_k(make_org):
    org = make_org()
    rng = np.random.default_rng(7)
    tool, doc, chunks = make_kb(org, chunks=[(f"c{i}", "") for i in range(400)])
    matrix = _clustered(400, 16, rng)
    queries = _clustered(20, 16, rng)
    with org_scope(org):
        set_embeddings(chunks, matrix, "m")
        with override_settings(VECTOR_ANN_MIN_VECTORS=10**9):
            vectors.clear_cache()
            exact = [ids(semantic_search(q, limit=10)) for q in queries]
        vectors.clear_cache()
        approximate = [ids(semantic_search(q, limit=10)) for q in queries]
        assert vectors._indexes[(org.pk, str(tool.pk), "m", 16)].ann is not None
        # Vectors added after the index was built go into it too.
        new = DocumentChunk.objects.create(chunk_id="new", tool=tool, document=doc)
        set_embeddings([new], [queries[0]], "m")
        first = semantic_search(queries[0], limit=1)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    numpy_top = [[f"c{i}" for i in np.argsort(-(unit @ (q / np.linalg.norm(q))), kind="stable")[:10]] for q in queries]
    assert approximate == exact
    assert [set(e) for e in exact] == [set(n) for n in numpy_top]
    assert ids(first) == ["new"] and first[0].score == pytest.approx(1.0)


@pytest.mark.django_db
def test_rebuild_writes_files_that_a_new_process_starts_from_and_dbhealth_checks(make_org, tmp_path, capsys):
    org = make_org()
    tool, doc, chunks = make_kb(org, chunks=[(f"c{i}", "") for i in range(4)])
    with org_scope(org):
        set_embeddings(chunks[:3], [[1, 0], [0, 1], [1, 1]], "m")
        assert ids(semantic_search([-1, 0], limit=1)) == ["c1"]
        # A vector written around set_embeddings carries no version: a loaded cache misses it.
        DocumentChunk.objects.filter(chunk_id="c3").update(
            embedding=struct.pack("<2f", -1, 0), embedding_dim=2, embedding_model="m"
        )
        assert ids(semantic_search([-1, 0], limit=1)) == ["c1"]
    report = vectors.freshness()
    assert report["ok"] is False and report["unversioned_vectors"] == 1
    call_command("dbhealth", "--json")
    health = json.loads(capsys.readouterr().out)
    assert health["checks"]["vector_index"]["unversioned_vectors"] == 1
    assert health["status"] == "degraded"
    assert [a["message"] for a in health["alerts"] if a["check"] == "vector_index"] == [
        "1 chunk vectors have no version (written around set_embeddings) (run manage.py rebuild_vector_index)"
    ]
    call_command("rebuild_vector_index")
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "1 unversioned vectors stamped",
        f"organization {org.pk} tool {tool.pk} model m: 4 vectors at version 2 (exact)",
        "1 vector sets written",
    ]
    assert vectors.freshness() == {
        "ok": True,
        "sets": 1,
        "files": 1,
        "unversioned_vectors": 0,
        "problems": [],
        "directory": str(tmp_path / "vector-index"),
    }
    vectors.clear_cache()
    with org_scope(org):
        assert ids(semantic_search([-1, 0], limit=1)) == ["c3"]
        # A file from the future (the database was restored from an older backup) is ignored.
        VectorSet.objects.update(version=1)
    vectors.clear_cache()
    report = vectors.freshness()
    assert report["ok"] is False and "is ahead of the database" in report["problems"][0]
    with org_scope(org):
        assert ids(semantic_search([-1, 0], limit=1)) == ["c3"]


# --- keyword search (committed rows: MariaDB's FULLTEXT index sees them at commit) -------------


def test_query_terms_are_plain_words_never_search_syntax():
    assert query_terms('Alpha "bravo" OR alpha; DROP TABLE x; -- NEAR(charlie) text:delta*') == [
        "alpha",
        "bravo",
        "or",
        "drop",
        "table",
        "x",
        "near",
        "charlie",
        "text",
        "delta",
    ]
    assert query_terms("  ¿?!  ") == []


@pytest.mark.django_db(transaction=True)
def test_keyword_search_ranks_by_relevance_inside_the_organization(make_org):
    mine, other = make_org(), make_org()
    tool, doc, _ = make_kb(
        mine,
        chunks=[
            ("both", "The invoice approval workflow for vendors"),
            ("one", "Vendor onboarding checklist and approval"),
            ("none", "Holiday calendar"),
        ],
    )
    other_tool, _, _ = make_kb(mine, chunks=[("elsewhere", "invoice archive")])
    make_kb(other, chunks=[("theirs", "invoice approval invoice approval")])
    with org_scope(mine):
        assert ids(keyword_hits("invoice approval", 10, tool=tool)) == ["both", "one"]
        assert {h for h in ids(keyword_hits("invoice approval", 10))} == {"both", "one", "elsewhere"}
        assert ids(keyword_hits("archive", 10, document=doc)) == []
        hits = keyword_hits("holiday", 10)
        assert ids(hits) == ["none"] and hits[0].document == doc and hits[0].score > 0
        for hostile in ('"invoice', "invoice OR", "NEAR(invoice", "org:*", "text : invoice", "invoice'; --", "\\"):
            assert set(ids(keyword_hits(hostile, 10))) <= {"both", "elsewhere"}
        assert keyword_hits("", 10) == [] and keyword_hits("invoice", 0) == []


@pytest.mark.django_db(transaction=True)
def test_the_full_text_index_follows_updates_and_deletes(make_org):
    org = make_org()
    tool, _, chunks = make_kb(org, chunks=[("a", "quarterly revenue report"), ("b", "staff handbook")])
    other_tool, _, _ = make_kb(org)
    with org_scope(org):
        DocumentChunk.objects.filter(chunk_id="a").update(text="travel expenses policy")
        assert ids(keyword_hits("revenue", 10)) == []
        assert ids(keyword_hits("expenses", 10)) == ["a"]
        DocumentChunk.objects.filter(chunk_id="a").update(tool=other_tool)
        assert ids(keyword_hits("expenses", 10, tool=tool)) == []
        assert ids(keyword_hits("expenses", 10, tool=other_tool)) == ["a"]
        DocumentChunk.objects.filter(chunk_id="b").delete()
        assert ids(keyword_hits("handbook", 10)) == []
        DocumentChunk.objects.create(chunk_id="c", text="new handbook edition")
        assert ids(keyword_hits("handbook", 10)) == ["c"]


# --- hybrid and kb_config ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_hybrid_search_fuses_both_lists_by_reciprocal_rank(make_org):
    org = make_org()
    _, _, chunks = make_kb(org, chunks=[("a", "zulu yankee"), ("b", "alpha report"), ("c", "yankee xray")])
    with org_scope(org):
        set_embeddings(chunks, [[1, 0], [0.8, 0.6], [0, 1]], "m")
        hits = hybrid_search("alpha", [1, 0], limit=3)
    assert ids(hits) == ["b", "a", "c"]
    assert [h.score for h in hits] == pytest.approx([1 / 62 + 1 / 61, 1 / 61, 1 / 63])
    assert hits[0].semantic == pytest.approx(0.8) and hits[0].keyword > 0
    assert hits[1].keyword is None and hits[2].semantic == pytest.approx(0.0)


@pytest.mark.django_db(transaction=True)
def test_hybrid_search_loads_a_chunk_found_by_keyword_alone_and_ranks_it_by_relevance(make_org):
    org = make_org()
    _, doc, chunks = make_kb(org, chunks=[("a", "zulu"), ("b", "alpha report"), ("k", "alpha alpha alpha")])
    with org_scope(org):
        set_embeddings(chunks[:2], [[1, 0], [0.8, 0.6]], "m")  # "k" has no embedding: keyword only
        hits = hybrid_search("alpha", [1, 0], limit=3)
    assert ids(hits)[0] == "b" and set(ids(hits)[1:]) == {"a", "k"}
    by_id = {hit.chunk.chunk_id: hit for hit in hits}
    # Loaded after the fusion, with its document; three mentions rank above one.
    assert by_id["k"].document == doc and by_id["k"].chunk.text == "alpha alpha alpha"
    assert by_id["k"].semantic is None and by_id["k"].keyword > by_id["b"].keyword > 0
    assert by_id["k"].score == pytest.approx(1 / 61) and by_id["b"].score == pytest.approx(2 / 62)


@pytest.mark.django_db(transaction=True)
def test_search_knowledge_follows_the_tools_kb_config(make_org):
    org, other = make_org(), make_org()
    config = {"search_type": "semantic", "top_k": 2, "similarity_threshold": 0.5, "embedding": {"model": "m"}}
    tool, doc, chunks = make_kb(
        org,
        kb_config=config,
        chunks=[("a", "refund policy"), ("b", "refund window"), ("c", "office map"), ("d", "parking")],
    )
    their_tool, _, _ = make_kb(other)
    with org_scope(org):
        set_embeddings(chunks, [[1, 0], [0.9, 0.1], [0.7, 0.7], [0, 1]], "m")
        set_embeddings([DocumentChunk.objects.create(chunk_id="other model", tool=tool, document=doc)], [[1, 0]], "x")
        hits = search_knowledge(tool, "refund", [1, 0])
        assert ids(hits) == ["a", "b"] and hits[0].document == doc
        assert ids(search_knowledge(tool, "refund", [1, 0], top_k=10)) == ["a", "b", "c"]
        assert ids(search_knowledge(tool.pk, "refund", [0, 1], search_type="semantic", top_k=10)) == ["d", "c"]
        tool.kb_config = {**config, "search_type": "keyword", "top_k": 5}
        tool.save()
        assert sorted(ids(search_knowledge(tool, "refund"))) == ["a", "b"]
        tool.kb_config = {**config, "search_type": "hybrid"}
        tool.save()
        # Semantic a, b, c (d is under the threshold), keyword c: c is in both lists.
        assert ids(search_knowledge(tool, "map", [1, 0])) == ["c", "a"]
        with pytest.raises(EmbeddingError, match="hybrid search needs the query's embedding"):
            search_knowledge(tool, "refund")
        with pytest.raises(ValueError, match="unknown search_type 'fuzzy'"):
            search_knowledge(tool, "refund", search_type="fuzzy")
        with pytest.raises(OrgScopeError, match="not a tool of the active organization"):
            search_knowledge(their_tool, "refund", [1, 0])
        with pytest.raises(Tool.DoesNotExist):
            search_knowledge(their_tool.pk, "refund", [1, 0])


# --- never a hit from another organization ------------------------------------------------------

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
_chunk = st.tuples(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),
    st.tuples(st.integers(-3, 3), st.integers(-3, 3), st.integers(-3, 3)).filter(any),
)
_world = st.lists(st.lists(_chunk, max_size=6), min_size=3, max_size=3)
_probe = st.tuples(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=2),
    st.tuples(st.integers(-3, 3), st.integers(-3, 3), st.integers(1, 3)),
    st.booleans(),
)


@pytest.mark.django_db(transaction=True)
@hsettings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(world=_world, probe=_probe)
def test_no_search_returns_another_organizations_chunk_whatever_the_cache_holds(make_org, world, probe):
    words, query_vector, poison = probe
    vectors.clear_cache()
    orgs = [make_org() for _ in range(3)]
    try:
        mine = {}
        for org, specs in zip(orgs, world):
            _, _, chunks = make_kb(org, chunks=[(str(i), " ".join(text)) for i, (text, _) in enumerate(specs)])
            with org_scope(org):
                set_embeddings(chunks, [vector for _, vector in specs], "m")
            mine[org.pk] = {
                c.pk: (set(text), np.array(vector, dtype=np.float64)) for c, (text, vector) in zip(chunks, specs)
            }
        for org in orgs:
            with org_scope(org):
                semantic_search([1, 0, 0])  # load this organization's caches
        if poison:
            # Whatever a cache holds (here: every other organization's vectors), results
            # come from the active organization's rows only.
            for (org_id, key, model, dim), index in list(vectors._indexes.items()):
                for other_id, chunks in mine.items():
                    if other_id != org_id and chunks:
                        index.upsert(
                            [pk.bytes for pk in chunks],
                            vectors.normalised(np.array([v for _, v in chunks.values()], dtype=np.float32)),
                        )
        q = np.array(query_vector, dtype=np.float64)
        for org in orgs:
            own = mine[org.pk]
            with org_scope(org):
                semantic = semantic_search(query_vector, limit=100)
                keyword = keyword_hits(" ".join(words), 100)
                hybrid = hybrid_search(" ".join(words), query_vector, limit=100)
            for hits in (semantic, keyword, hybrid):
                assert all(h.chunk.org_id == org.pk for h in hits)
            cosines = sorted(
                (float(v @ q / (np.linalg.norm(v) * np.linalg.norm(q))) for _, v in own.values()), reverse=True
            )
            assert [h.score for h in semantic] == pytest.approx(cosines, abs=1e-6)
            assert {h.chunk.pk for h in keyword} == {pk for pk, (text, _) in own.items() if text & set(words)}
            assert {h.chunk.pk for h in hybrid} == set(own)
    finally:
        for org in orgs:
            org.delete()


@pytest.mark.backends("postgresql")
@pytest.mark.django_db
def test_the_postgresql_full_text_index_takes_entries_directly_without_a_pending_list():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'document_chunks_fts'")
        assert cursor.fetchone()[0] == ["fastupdate=off"]


@pytest.mark.backends("sqlite")
@pytest.mark.django_db
def test_the_fts_triggers_survive_the_migrations_that_copy_document_chunks():
    """SQLite alters a column by copying the table, which leaves triggers behind: every such
    migration of document_chunks must put the full-text triggers back (RestoreChunkFullTextTriggers)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'document_chunks'")
        names = sorted(name for (name,) in cursor.fetchall())
    assert names == ["document_chunks_fts_ad", "document_chunks_fts_ai", "document_chunks_fts_au"]
