"""Knowledge retrieval inside the active organization: keyword, semantic and hybrid search,
and :func:`search_knowledge`, which follows a knowledge tool's ``kb_config``."""

from __future__ import annotations

from asgiref.sync import sync_to_async

from agentforge_agents.models import Tool
from agentforge_core.tenancy import OrgScopeError, current_org_id
from knowledge.fulltext import keyword_search
from knowledge.models import as_pk, result_limit
from knowledge.vectors import EmbeddingError, Hit, load_chunks, semantic_search

SEARCH_TYPES = ("hybrid", "semantic", "keyword")
# AgentForge's defaults for a knowledge tool.
DEFAULT_TOP_K = 5
DEFAULT_SEARCH_TYPE = "hybrid"
# Reciprocal rank fusion: score = sum over the lists of 1 / (RRF_K + rank).
RRF_K = 60
# Each list handed to the fusion is this many times longer than the result.
FUSION_DEPTH = 4


def keyword_hits(query: str, limit: int = 10, *, tool=None, document=None) -> list[Hit]:
    """Keyword search (the backend's full-text engine) as hits with their documents."""
    ranked = keyword_search(query, limit, tool=tool, document=document)
    chunks = load_chunks(pk for pk, _ in ranked)
    return [Hit(chunks[pk], score, keyword=score) for pk, score in ranked if pk in chunks]


def hybrid_search(
    query: str,
    vector,
    limit: int = 10,
    *,
    model: str | None = None,
    tool=None,
    document=None,
    threshold: float | None = None,
    rrf_k: int = RRF_K,
) -> list[Hit]:
    """Semantic and keyword lists fused by reciprocal rank; ``threshold`` applies to the
    semantic list (keyword relevance has no absolute scale)."""
    limit = result_limit(limit)
    depth = max(limit * FUSION_DEPTH, 20)
    semantic = semantic_search(vector, depth, model=model, tool=tool, document=document, threshold=threshold)
    # The keyword list is fused by id: only the chunks that make the result are loaded.
    keyword = keyword_search(query, depth, tool=tool, document=document)
    fused: dict = {}
    for rank, hit in enumerate(semantic, 1):
        fused[hit.chunk.pk] = Hit(hit.chunk, 1.0 / (rrf_k + rank), semantic=hit.score)
    for rank, (pk, score) in enumerate(keyword, 1):
        entry = fused.setdefault(pk, Hit(None, 0.0))
        entry.score += 1.0 / (rrf_k + rank)
        entry.keyword = score
    # Ties by id, as before; the keyword-only chunks among the best are loaded next.
    ranked = sorted(fused.items(), key=lambda item: (-item[1].score, str(item[0])))
    best: list[Hit] = []
    while ranked and len(best) < limit:
        head, ranked = ranked[: limit - len(best)], ranked[limit - len(best) :]
        chunks = load_chunks(pk for pk, hit in head if hit.chunk is None)
        for pk, hit in head:
            if hit.chunk is None:
                if pk not in chunks:  # deleted since the keyword search saw it
                    continue
                hit.chunk = chunks[pk]
            best.append(hit)
    return best


def kb_settings(tool: Tool) -> dict:
    """``search_type``, ``top_k``, ``similarity_threshold`` and the embedding model of a
    knowledge tool: its kb_config, else the same keys in its config, else AgentForge's defaults."""
    kb = tool.kb_config if isinstance(tool.kb_config, dict) else {}
    config = tool.config if isinstance(tool.config, dict) else {}

    def pick(key, default=None):
        for source in (kb, config):
            if source.get(key) not in (None, ""):
                return source[key]
        return default

    search_type = str(pick("search_type", DEFAULT_SEARCH_TYPE)).lower()
    if search_type not in SEARCH_TYPES:
        raise ValueError(f"tool {tool.pk}: unknown search_type {search_type!r} (expected {', '.join(SEARCH_TYPES)})")
    try:
        top_k = int(pick("top_k", DEFAULT_TOP_K))
        threshold = pick("similarity_threshold")
        threshold = None if threshold is None else float(threshold)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"tool {tool.pk}: bad top_k or similarity_threshold ({exc})") from None
    embedding = pick("embedding") if isinstance(pick("embedding"), dict) else {}
    return {
        "search_type": search_type,
        "top_k": top_k,
        "similarity_threshold": threshold,
        "model": embedding.get("model") or None,
    }


def search_knowledge(
    tool,
    query: str = "",
    vector=None,
    *,
    document=None,
    search_type: str | None = None,
    top_k: int | None = None,
    similarity_threshold: float | None = None,
    model: str | None = None,
) -> list[Hit]:
    """Search one knowledge tool the way its ``kb_config`` says (arguments override it).

    ``tool`` is a Tool of the active organization or its id; ``query`` is the text (keyword
    and hybrid), ``vector`` its embedding by the tool's model (semantic and hybrid).
    Returns hits best first, each with its chunk, the chunk's document and its score.
    """
    org_id = current_org_id()
    if not isinstance(tool, Tool):
        tool = Tool.objects.get(pk=as_pk(tool))
    elif tool.org_id != org_id:
        raise OrgScopeError(f"tool {tool.pk} is not a tool of the active organization")
    kb = kb_settings(tool)
    search_type = (search_type or kb["search_type"]).lower()
    top_k = kb["top_k"] if top_k is None else top_k
    threshold = kb["similarity_threshold"] if similarity_threshold is None else similarity_threshold
    model = model or kb["model"]
    if search_type not in SEARCH_TYPES:
        raise ValueError(f"unknown search_type {search_type!r} (expected {', '.join(SEARCH_TYPES)})")
    if search_type != "keyword" and vector is None:
        raise EmbeddingError(f"{search_type} search needs the query's embedding (vector=...)")
    if search_type == "keyword":
        return keyword_hits(query, top_k, tool=tool, document=document)
    if search_type == "semantic":
        return semantic_search(vector, top_k, model=model, tool=tool, document=document, threshold=threshold)
    return hybrid_search(query, vector, top_k, model=model, tool=tool, document=document, threshold=threshold)


async def asearch_knowledge(tool, query: str = "", vector=None, **options) -> list[Hit]:
    """:func:`search_knowledge` for async code (the active organization follows the context)."""
    return await sync_to_async(search_knowledge)(tool, query, vector, **options)
