"""Mappers for the ``knowledge`` tables: documents, scraped pages and their chunks
(``documents.json``, ``scraped_pages.json``, ``chunks_index.json``, docs/legacy-format.md §4)."""

from __future__ import annotations

import hashlib

from django.db.models import Prefetch

from agentforge_agents.models import Tool
from agentforge_core.models import legacy_uuid
from knowledge.models import Document, DocumentChunk
from legacy.format.errors import LegacyDataError, LegacyFieldError
from legacy.format.mappers.base import (
    Context,
    Mapped,
    Mapper,
    Rec,
    Row,
    extra_items,
    legacy_extra,
    omit_missing,
    ts_out,
)
from legacy.format.mappers.common import (
    ANOTHER_ORG,
    DANGLING,
    app_file_org,
    app_file_org_book,
    app_file_org_out,
    field_ref,
    ref_or_keep,
    same_org,
)

EMBEDDED = "__embedded__"
INDEX_OWNED = (
    "text",
    "source",
    "chunk_type",
    "table_data",
    "is_table",
    "rows_count",
    "in_index",
    "index_position",
    "tool_id",
)
EMBEDDED_LAYOUT = ["id", "text", "start", "end"]


def chunk_legacy_id(prefix: str, parent_id: str, chunk_id) -> str:
    key = f"{prefix}:{parent_id}:{chunk_id}"
    if len(key) <= 128:
        return key
    return f"{prefix}#" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def _chunk_number(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31 else None


def _chunk_id_value(rec: Rec, key: str):
    value = rec.raw(key, None)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        rec.fail(key, f"expected an integer or a string, got {value!r}"[:120])
    if isinstance(value, str) and len(value) > 64:
        rec.fail(key, "longer than 64 characters")
    return value


def merge_from_document(existing: dict, new: dict) -> dict:
    """An embedded (documents[].chunks) copy landing on a row the index already wrote."""
    out = dict(new)
    embedded = dict(new["legacy_extra"][EMBEDDED])
    extra = dict(existing.get("legacy_extra") or {})
    if existing.get("in_index"):
        for key in INDEX_OWNED:
            out.pop(key, None)
        if new["text"] != existing.get("text"):
            embedded["text"] = new["text"]
    extra[EMBEDDED] = embedded
    out["legacy_extra"] = extra
    return out


def merge_from_index(existing: dict, new: dict) -> dict:
    """An index entry landing on a row made from a document's embedded copy."""
    out = dict(new)
    old_extra = existing.get("legacy_extra") or {}
    extra = dict(new["legacy_extra"])
    if EMBEDDED in old_extra:
        embedded = dict(old_extra[EMBEDDED])
        if "text" not in embedded and existing.get("text") != new["text"]:
            embedded["text"] = existing.get("text")
        elif embedded.get("text") == new["text"]:
            embedded.pop("text")
        extra[EMBEDDED] = embedded
        for key in ("start_offset", "end_offset"):
            out.pop(key, None)
    out["legacy_extra"] = extra
    return out


DOC_DEFAULTS = {
    "filename": "",
    "original_name": "",
    "file_type": "",
    "file_size": 0,
    "content": "",
    "chunks": [],
    "status": "pending",
    "error_message": "",
    "tool_id": None,
    "url": "",
    "title": "",
}


class DocumentMapper(Mapper):
    model = Document
    source = Document.Source.UPLOAD
    prefix = "doc"
    satellites = (("document_chunks (embedded)", DocumentChunk),)

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        pk = self.pk(lid)
        org_id = app_file_org(rec, ctx)
        ctx.note_org(Document, pk, org_id)
        tool_id = field_ref(ctx, rec, Tool, "tool_id", dangling, mapped, where, org=org_id)
        v = {"id": pk, "legacy_id": lid, "org_id": org_id, "tool_id": tool_id, "source": self.source}
        if self.source == Document.Source.UPLOAD:
            v.update(
                filename=rec.str("filename", "", max_length=500),
                original_name=rec.str("original_name", "", max_length=500),
                file_type=rec.str("file_type", "", max_length=20),
                file_size=rec.int("file_size", 0),
            )
        else:
            v.update(url=rec.str("url", ""), title=rec.str("title", "", null=True))
            if v["title"] is None:
                v["title"] = ""
                dangling["title"] = None
        v.update(
            content=rec.str("content", ""),
            status=rec.enum("status", Document._meta.get_field("status").choices, "pending"),
            error_message=rec.str("error_message", "", null=True),
        )
        if v["error_message"] is None:
            v["error_message"] = ""
            dangling["error_message"] = None
        created = rec.ts("created_at", None)
        if created is not None:
            v["created_at"] = created
        chunks = rec.list("chunks", [])
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, "__org__": app_file_org_book(rec)})
        mapped.rows.append(Row(Document, v))
        for position, chunk in enumerate(chunks):
            if not isinstance(chunk, dict):
                rec.fail(f"chunks[{position}]", "expected an object")
            crec = Rec(chunk, f"chunks[{position}].")
            cid = _chunk_id_value(crec, "id")
            text = crec.str("text", "")
            start = crec.int("start", None, null=True, minimum=-(2**31), maximum=2**31 - 1)
            end = crec.int("end", None, null=True, minimum=-(2**31), maximum=2**31 - 1)
            embedded = {"pos": position}
            keys = [k for k in chunk.keys() if k in EMBEDDED_LAYOUT]
            if keys != EMBEDDED_LAYOUT:
                embedded["keys"] = keys
            if crec.extra():
                embedded["extra"] = crec.extra()
            if isinstance(cid, str) and cid.lstrip("-").isdigit():
                embedded["str_id"] = True
            chunk_lid = chunk_legacy_id(self.prefix, lid, cid)
            mapped.rows.append(
                Row(
                    DocumentChunk,
                    {
                        "id": legacy_uuid("document_chunks", chunk_lid),
                        "legacy_id": chunk_lid,
                        "org_id": org_id,
                        "tool_id": tool_id,
                        "document_id": pk,
                        "chunk_id": str(cid),
                        "chunk_number": _chunk_number(cid),
                        "text": text,
                        "start_offset": start,
                        "end_offset": end,
                        "in_index": False,
                        "legacy_extra": {EMBEDDED: embedded},
                    },
                    merge=merge_from_document,
                )
            )
        return mapped

    def embedded_chunks(self, document) -> list:
        out = []
        rows = getattr(document, "ordered_chunks", None)  # prefetched by store_queryset
        if rows is None:
            rows = (
                DocumentChunk.all_orgs.filter(document_id=document.pk)
                .order_by("index_position", "id")
                .iterator(chunk_size=2000)
            )
        items = []
        for chunk in rows:
            embedded = (chunk.legacy_extra or {}).get(EMBEDDED)
            if embedded is not None:
                items.append((embedded.get("pos", 0), chunk, embedded))
        for _, chunk, embedded in sorted(items, key=lambda item: item[0]):
            cid = (
                chunk.chunk_number if chunk.chunk_number is not None and not embedded.get("str_id") else chunk.chunk_id
            )
            values = {
                "id": cid,
                "text": embedded.get("text", chunk.text),
                "start": chunk.start_offset,
                "end": chunk.end_offset,
            }
            entry = {key: values[key] for key in embedded.get("keys", EMBEDDED_LAYOUT)}
            entry.update(embedded.get("extra") or {})
            out.append(entry)
        return out

    def to_legacy(self, doc, ctx=None):
        ctx = ctx or Context()
        extra = doc.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        out = {
            "id": doc.legacy_id or str(doc.pk),
            "tool_id": ctx.legacy_id_of(Tool, doc.tool_id) if doc.tool_id else dangling.get("tool_id"),
        }
        if self.source == Document.Source.UPLOAD:
            out.update(
                filename=doc.filename, original_name=doc.original_name, file_type=doc.file_type, file_size=doc.file_size
            )
        else:
            out.update(url=doc.url, title=None if "title" in dangling else doc.title)
        out.update(
            content=doc.content,
            chunks=self.embedded_chunks(doc),
            status=doc.status,
            error_message=None if "error_message" in dangling else doc.error_message,
            created_at=ts_out(doc.created_at),
        )
        out.update(app_file_org_out(ctx, doc, extra))
        out.update(extra_items(extra))
        return omit_missing(out, extra, DOC_DEFAULTS)

    def export_queryset(self):
        return Document.all_orgs.filter(source=self.source).order_by("created_at", "legacy_id")

    def store_queryset(self):
        chunks = DocumentChunk.all_orgs.order_by("index_position", "id")
        return self.export_queryset().prefetch_related(Prefetch("chunks", chunks, to_attr="ordered_chunks"))


class ScrapedPageMapper(DocumentMapper):
    source = Document.Source.WEB
    prefix = "page"


INDEX_LAYOUTS = [
    ["tool_id", "doc_id", "chunk_id", "text", "source", "type"],
    ["tool_id", "page_id", "chunk_id", "text", "source", "type"],
    ["chunk_id", "text", "source", "type", "tool_id"],
    ["chunk_id", "text", "source", "type", "tool_id", "table_data", "is_table", "rows_count"],
]
INDEX_KEYS = {
    "tool_id",
    "doc_id",
    "page_id",
    "chunk_id",
    "text",
    "source",
    "type",
    "table_data",
    "is_table",
    "rows_count",
}


class ChunkIndexMapper(Mapper):
    """``chunks_index.json`` entries → DocumentChunk rows, merged with the embedded copies."""

    model = DocumentChunk

    def record_id(self, outer_key, record):
        if isinstance(record, dict):
            return f"{record.get('doc_id') or record.get('page_id') or record.get('source')}#{record.get('chunk_id')}"
        return outer_key

    def map_record(self, record, ctx, position: int | None = None):
        rec = Rec(record)
        cid = _chunk_id_value(rec, "chunk_id")
        dangling = {}
        warnings: list = []
        doc_lid = rec.str("doc_id", None, null=True) if rec.has("doc_id") else None
        page_lid = rec.str("page_id", None, null=True) if rec.has("page_id") else None
        tool_lid = rec.str("tool_id", None, null=True) if rec.has("tool_id") else None
        source = rec.str("source", "", null=True)
        text = rec.str("text", "")
        parent = doc_lid or page_lid
        kind = "doc" if doc_lid else "page"
        where = f"{self.file}: record {parent or source}#{cid}"
        if parent:
            chunk_lid = chunk_legacy_id(kind, parent, cid)
        else:
            digest = hashlib.sha256(f"{tool_lid}\0{source}\0{cid}".encode("utf-8")).hexdigest()[:40]
            chunk_lid = f"src:{digest}"
        mapped = Mapped(chunk_lid)
        document_id = None
        if parent:
            document_id = ctx.ref(Document, parent)
            if document_id is None:
                dangling[f"{kind}_id"] = parent
                warnings.append(
                    f"{where}: {kind}_id: {parent!r} refers to no {'document' if kind == 'doc' else 'scraped page'}"
                )
        tool_id = ref_or_keep(ctx, Tool, tool_lid, "tool_id", dangling, warnings, where) if tool_lid else None
        table_data = rec.json("table_data", None)
        is_table = rec.bool("is_table", False, null=True)
        rows_count = rec.int("rows_count", None, null=True)
        keys = [k for k in record.keys() if k in INDEX_KEYS]
        book = {}
        if keys in INDEX_LAYOUTS:
            layout = INDEX_LAYOUTS.index(keys)
            if layout != (0 if doc_lid else 1 if page_lid else 3 if "table_data" in keys else 2):
                book["__layout__"] = layout
        else:
            book["__keys__"] = keys
        if isinstance(cid, str) and cid.lstrip("-").isdigit():
            book["__str_id__"] = True
        if source is None:
            dangling["source"] = None
        if is_table is None:
            dangling["is_table"] = None
        if parent and document_id is None and tool_lid is None and not keys:
            pass
        # An index entry names no organization: the chunk belongs to its document's (or,
        # without one, its tool's), so an organization's chunks never move to the default one.
        org_id = ctx.org_of(Document, document_id) or ctx.org_of(Tool, tool_id) or ctx.default_org_id()
        if tool_id is not None and not same_org(ctx, Tool, tool_lid, tool_id, org_id):
            dangling["tool_id"] = tool_lid  # the document's organization is not the tool's
            tool_id = None
            warnings.append(f"{where}: tool_id: {tool_lid!r} {ANOTHER_ORG}")
        extra = {k: v for k, v in record.items() if k not in INDEX_KEYS}
        if dangling:
            extra[DANGLING] = dangling
        extra.update(book)
        v = {
            "id": legacy_uuid("document_chunks", chunk_lid),
            "legacy_id": chunk_lid,
            "org_id": org_id,
            "tool_id": tool_id,
            "document_id": document_id,
            "chunk_id": str(cid),
            "chunk_number": _chunk_number(cid),
            "text": text,
            "source": source or "",
            "chunk_type": rec.str("type", "document", null=True, max_length=50) or "",
            "table_data": table_data,
            "is_table": bool(is_table),
            "rows_count": rows_count,
            "in_index": True,
            "index_position": position,
            "legacy_extra": extra,
        }
        if record.get("type", "") is None:
            extra.setdefault(DANGLING, {})["type"] = None
        mapped.warnings.extend(warnings)
        mapped.rows.append(Row(DocumentChunk, v, merge=merge_from_index))
        return mapped

    def to_rows(self, record, ctx=None, outer_key=None, position=None):
        ctx = ctx or Context()
        if not isinstance(record, dict):
            raise LegacyDataError(self.file, "expected an object", outer_key)
        try:
            return self.map_record(record, ctx, position)
        except LegacyFieldError as exc:
            raise LegacyDataError(self.file, exc.message, self.record_id(outer_key, record), exc.field) from None

    def to_legacy(self, chunk, ctx=None):
        ctx = ctx or Context()
        extra = chunk.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        doc_key, doc_value = None, None
        if chunk.document_id:
            sources = getattr(ctx, "document_sources", None)
            if sources is not None and chunk.document_id in sources:
                source = sources[chunk.document_id]
            else:
                source = Document.all_orgs.filter(pk=chunk.document_id).values_list("source", flat=True).first()
            doc_key = "page_id" if source == Document.Source.WEB else "doc_id"
            doc_value = ctx.legacy_id_of(Document, chunk.document_id)
        elif "doc_id" in dangling or "page_id" in dangling:
            doc_key = "doc_id" if "doc_id" in dangling else "page_id"
            doc_value = dangling[doc_key]
        cid = chunk.chunk_number if chunk.chunk_number is not None and not extra.get("__str_id__") else chunk.chunk_id
        values = {
            "tool_id": ctx.legacy_id_of(Tool, chunk.tool_id) if chunk.tool_id else dangling.get("tool_id"),
            "doc_id": doc_value,
            "page_id": doc_value,
            "chunk_id": cid,
            "text": chunk.text,
            "source": None if "source" in dangling else chunk.source,
            "type": None if "type" in dangling else chunk.chunk_type,
            "table_data": chunk.table_data,
            "is_table": None if "is_table" in dangling else chunk.is_table,
            "rows_count": chunk.rows_count,
        }
        if "__keys__" in extra:
            keys = extra["__keys__"]
        elif "__layout__" in extra:
            keys = INDEX_LAYOUTS[extra["__layout__"]]
        elif doc_key:
            keys = INDEX_LAYOUTS[0 if doc_key == "doc_id" else 1]
        else:
            keys = INDEX_LAYOUTS[3 if chunk.is_table or chunk.table_data is not None else 2]
        out = {key: values[key] for key in keys}
        out.update(extra_items(extra))
        return out

    def export_queryset(self):
        return DocumentChunk.all_orgs.filter(in_index=True).order_by("index_position", "id")
