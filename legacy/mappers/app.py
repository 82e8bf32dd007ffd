"""Mappers for the app-level files (docs/legacy-format.md §4) and the records without a table."""

from __future__ import annotations

import copy
import hashlib
import hmac

from django.db.models import Prefetch

from agentforge_core.models import legacy_uuid
from accounts.models import Organization, User
from agents.models import Agent, AgentTool, Tool, extract_secrets, merge_secrets
from conversations.models import Conversation, Message
from knowledge.models import Document, DocumentChunk
from legacy.models import LegacyRecord
from legacy.mappers.base import (
    ChildSet,
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
from legacy.errors import LegacyDataError, LegacyFieldError
from legacy.jsonio import parse_timestamp
from legacy.mappers.common import DANGLING, ref_or_keep
from legacy.mappers.security import _system_row
from agentforge_core.crypto import sha256_hex
from settings_app.models import SystemSetting


def _org_of(rec: Rec, ctx: Context):
    """App records carry no org_id: everything belongs to org_default (an explicit one wins)."""
    if rec.has("org_id"):
        legacy = rec.str("org_id", None, null=True)
        pk = ctx.ref(Organization, legacy) if legacy else None
        if pk is None:
            rec.fail("org_id", f"{legacy!r} refers to no organization")
        return pk
    return ctx.default_org_id()


def _org_out(ctx, instance, extra):
    if "org_id" in (extra.get("__org__") or ()):
        return {"org_id": ctx.legacy_id_of(Organization, instance.org_id)}
    return {}


def _org_book(rec: Rec):
    return ["org_id"] if rec.has("org_id") else None


def _user_ref(ctx, rec, key, dangling, mapped, where):
    return ref_or_keep(ctx, User, rec.str(key, None, null=True), key, dangling, mapped.warnings, where)


def _user_out(ctx, pk, dangling, key):
    return ctx.legacy_id_of(User, pk) if pk else dangling.get(key)


# --- agents -------------------------------------------------------------------------------------

AGENT_DEFAULTS = {"icon": "\U0001f916", "goal": "", "agent_type": "conversational", "personality": {}, "guardrails": {},
                  "tasks": [], "tool_ids": [], "model_id": "", "status": "draft", "is_active": True, "memory": [],
                  "memory_enabled": False, "owner_id": None, "created_by": None, "process_definition": None,
                  "process_settings": None}


def strip_tool_prefix(ref: str) -> str:
    for prefix in ("api:", "kb:"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


class AgentMapper(Mapper):
    model = Agent
    satellites = (("agent_tools", AgentTool),)

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        pk = self.pk(lid)
        org_id = _org_of(rec, ctx)
        v = {
            "id": pk, "legacy_id": lid, "org_id": org_id, "name": rec.str("name", max_length=255),
            "icon": rec.str("icon", "\U0001f916", max_length=32), "goal": rec.str("goal", ""),
            "agent_type": rec.enum("agent_type", Agent.AgentType.choices, "conversational"),
            "personality": rec.dict("personality", {}), "guardrails": rec.dict("guardrails", {}),
            "tasks": rec.list("tasks", []), "model_id": rec.str("model_id", "", max_length=100),
            "status": rec.enum("status", Agent.Status.choices, "draft"), "is_active": rec.bool("is_active", True),
            "memory": rec.list("memory", []), "memory_enabled": rec.bool("memory_enabled", False),
            "owner_id": _user_ref(ctx, rec, "owner_id", dangling, mapped, where),
            "created_by_id": _user_ref(ctx, rec, "created_by", dangling, mapped, where),
            "process_definition": rec.dict("process_definition", None, null=True),
            "process_settings": rec.dict("process_settings", None, null=True),
        }
        for key in ("created_at", "updated_at"):
            value = rec.ts(key, None)
            if value is not None:
                v[key] = value
        tool_rows = []
        for position, ref in enumerate(rec.list("tool_ids", [], of=str)):
            if len(ref) > 160:
                rec.fail("tool_ids", f"entry {position} is longer than 160 characters")
            tool_pk = ctx.ref(Tool, strip_tool_prefix(ref))
            if tool_pk is None:
                mapped.warnings.append(f"{where}: tool_ids: {ref!r} refers to no tool (kept as a dangling reference)")
            tool_rows.append({"org_id": org_id, "agent_id": pk, "tool_id": tool_pk, "tool_ref": ref, "position": position})
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, "__org__": _org_book(rec)})
        mapped.rows.append(Row(Agent, v))
        mapped.children.append(ChildSet(AgentTool, "agent_id", pk, tool_rows, ("tool_id", "tool_ref", "position")))
        return mapped

    def export_queryset(self):
        links = AgentTool.all_orgs.order_by("position")
        return super().export_queryset().prefetch_related(Prefetch("agent_tools", links, to_attr="tool_links"))

    def to_legacy(self, agent, ctx=None):
        ctx = ctx or Context()
        extra = agent.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        if hasattr(agent, "tool_links"):  # prefetched with every agent (export_queryset)
            tool_ids = [link.tool_ref for link in agent.tool_links]
        else:
            tool_ids = list(AgentTool.all_orgs.filter(agent_id=agent.pk).order_by("position").values_list("tool_ref", flat=True))
        out = {
            "id": agent.legacy_id or str(agent.pk), "name": agent.name, "icon": agent.icon, "goal": agent.goal,
            "agent_type": agent.agent_type, "personality": agent.personality, "guardrails": agent.guardrails,
            "tasks": agent.tasks, "tool_ids": tool_ids, "model_id": agent.model_id,
            "created_at": ts_out(agent.created_at), "updated_at": ts_out(agent.updated_at), "status": agent.status,
            "is_active": agent.is_active, "memory": agent.memory, "memory_enabled": agent.memory_enabled,
            "owner_id": _user_out(ctx, agent.owner_id, dangling, "owner_id"),
            "created_by": _user_out(ctx, agent.created_by_id, dangling, "created_by"),
            "process_definition": agent.process_definition, "process_settings": agent.process_settings,
        }
        out.update(_org_out(ctx, agent, extra))
        out.update(extra_items(extra))
        return omit_missing(out, extra, AGENT_DEFAULTS)


# --- tools --------------------------------------------------------------------------------------

TOOL_DEFAULTS = {"description": "", "config": {}, "api_config": None, "kb_config": None, "is_active": True,
                 "access_type": "owner_only", "allowed_user_ids": [], "allowed_group_ids": [], "can_edit_user_ids": [],
                 "can_delete_user_ids": [], "can_execute_user_ids": [], "owner_id": None}


class ToolMapper(Mapper):
    model = Tool

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        creds = {}
        configs = {}
        for key in ("config", "api_config", "kb_config"):
            value = rec.dict(key, {} if key == "config" else None, null=key != "config")
            configs[key] = extract_secrets(value, key, creds) if isinstance(value, dict) else value
        owner = rec.str("owner_id", None, null=True)
        system_owned = owner == "system"
        org_id = _org_of(rec, ctx)
        ctx.note_org(Tool, self.pk(lid), org_id)
        v = {
            "id": self.pk(lid), "legacy_id": lid, "org_id": org_id,
            # AgentForge's ToolConfiguration.type is a free string (its UI also makes "spreadsheet" tools).
            "type": rec.str("type", max_length=Tool._meta.get_field("type").max_length),
            "name": rec.str("name", max_length=255),
            "description": rec.str("description", ""), **configs, "credentials": creds,
            "is_active": rec.bool("is_active", True),
            "owner_id": None if system_owned else ref_or_keep(ctx, User, owner, "owner_id", dangling, mapped.warnings, where),
            "system_owned": system_owned,
            "access_type": rec.enum("access_type", Tool.AccessType.choices, "owner_only"),
        }
        if v["type"] not in Tool.Type.values:
            mapped.warnings.append(f"{where}: type: {v['type']!r} is not a known tool type (kept)")
        for key in ("allowed_user_ids", "allowed_group_ids", "can_edit_user_ids", "can_delete_user_ids", "can_execute_user_ids"):
            v[key] = rec.list(key, [])
        created = rec.ts("created_at", None)
        if created is not None:
            v["created_at"] = created
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, "__org__": _org_book(rec)})
        mapped.rows.append(Row(Tool, v))
        return mapped

    def to_legacy(self, tool, ctx=None):
        ctx = ctx or Context()
        extra = tool.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        configs = {"config": copy.deepcopy(tool.config), "api_config": copy.deepcopy(tool.api_config),
                   "kb_config": copy.deepcopy(tool.kb_config)}
        merge_secrets(configs, tool.credentials)
        out = {"id": tool.legacy_id or str(tool.pk), "type": tool.type, "name": tool.name, "description": tool.description,
               **configs, "created_at": ts_out(tool.created_at), "is_active": tool.is_active,
               "owner_id": "system" if tool.system_owned else _user_out(ctx, tool.owner_id, dangling, "owner_id"),
               "access_type": tool.access_type}
        for key in ("allowed_user_ids", "allowed_group_ids", "can_edit_user_ids", "can_delete_user_ids", "can_execute_user_ids"):
            out[key] = getattr(tool, key)
        out.update(_org_out(ctx, tool, extra))
        out.update(extra_items(extra))
        return omit_missing(out, extra, TOOL_DEFAULTS)


# --- documents, scraped pages and chunks ---------------------------------------------------------

EMBEDDED = "__embedded__"
INDEX_OWNED = ("text", "source", "chunk_type", "table_data", "is_table", "rows_count", "in_index", "index_position", "tool_id")
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


DOC_DEFAULTS = {"filename": "", "original_name": "", "file_type": "", "file_size": 0, "content": "", "chunks": [],
                "status": "pending", "error_message": "", "tool_id": None, "url": "", "title": ""}


class DocumentMapper(Mapper):
    model = Document
    source = Document.Source.UPLOAD
    prefix = "doc"
    satellites = (("document_chunks (embedded)", DocumentChunk),)

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        pk = self.pk(lid)
        org_id = _org_of(rec, ctx)
        ctx.note_org(Document, pk, org_id)
        tool_id = ref_or_keep(ctx, Tool, rec.str("tool_id", None, null=True), "tool_id", dangling, mapped.warnings, where)
        v = {"id": pk, "legacy_id": lid, "org_id": org_id, "tool_id": tool_id, "source": self.source}
        if self.source == Document.Source.UPLOAD:
            v.update(filename=rec.str("filename", "", max_length=500), original_name=rec.str("original_name", "", max_length=500),
                     file_type=rec.str("file_type", "", max_length=20), file_size=rec.int("file_size", 0))
        else:
            v.update(url=rec.str("url", ""), title=rec.str("title", "", null=True))
            if v["title"] is None:
                v["title"] = ""
                dangling["title"] = None
        v.update(content=rec.str("content", ""), status=rec.enum("status", Document._meta.get_field("status").choices, "pending"),
                 error_message=rec.str("error_message", "", null=True))
        if v["error_message"] is None:
            v["error_message"] = ""
            dangling["error_message"] = None
        created = rec.ts("created_at", None)
        if created is not None:
            v["created_at"] = created
        chunks = rec.list("chunks", [])
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, "__org__": _org_book(rec)})
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
            mapped.rows.append(Row(DocumentChunk, {
                "id": legacy_uuid("document_chunks", chunk_lid), "legacy_id": chunk_lid, "org_id": org_id,
                "tool_id": tool_id, "document_id": pk, "chunk_id": str(cid), "chunk_number": _chunk_number(cid),
                "text": text, "start_offset": start, "end_offset": end, "in_index": False,
                "legacy_extra": {EMBEDDED: embedded},
            }, merge=merge_from_document))
        return mapped

    def embedded_chunks(self, document) -> list:
        out = []
        rows = getattr(document, "ordered_chunks", None)  # prefetched by store_queryset
        if rows is None:
            rows = DocumentChunk.all_orgs.filter(document_id=document.pk).order_by("index_position", "id").iterator(chunk_size=2000)
        items = []
        for chunk in rows:
            embedded = (chunk.legacy_extra or {}).get(EMBEDDED)
            if embedded is not None:
                items.append((embedded.get("pos", 0), chunk, embedded))
        for _, chunk, embedded in sorted(items, key=lambda item: item[0]):
            cid = chunk.chunk_number if chunk.chunk_number is not None and not embedded.get("str_id") else chunk.chunk_id
            values = {"id": cid, "text": embedded.get("text", chunk.text), "start": chunk.start_offset, "end": chunk.end_offset}
            entry = {key: values[key] for key in embedded.get("keys", EMBEDDED_LAYOUT)}
            entry.update(embedded.get("extra") or {})
            out.append(entry)
        return out

    def to_legacy(self, doc, ctx=None):
        ctx = ctx or Context()
        extra = doc.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        out = {"id": doc.legacy_id or str(doc.pk),
               "tool_id": ctx.legacy_id_of(Tool, doc.tool_id) if doc.tool_id else dangling.get("tool_id")}
        if self.source == Document.Source.UPLOAD:
            out.update(filename=doc.filename, original_name=doc.original_name, file_type=doc.file_type, file_size=doc.file_size)
        else:
            out.update(url=doc.url, title=None if "title" in dangling else doc.title)
        out.update(content=doc.content, chunks=self.embedded_chunks(doc), status=doc.status,
                   error_message=None if "error_message" in dangling else doc.error_message,
                   created_at=ts_out(doc.created_at))
        out.update(_org_out(ctx, doc, extra))
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
INDEX_KEYS = {"tool_id", "doc_id", "page_id", "chunk_id", "text", "source", "type", "table_data", "is_table", "rows_count"}


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
                warnings.append(f"{where}: {kind}_id: {parent!r} refers to no {'document' if kind == 'doc' else 'scraped page'}")
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
        extra = {k: v for k, v in record.items() if k not in INDEX_KEYS}
        if dangling:
            extra[DANGLING] = dangling
        extra.update(book)
        # An index entry names no organization: the chunk belongs to its document's (or,
        # without one, its tool's), so an organization's chunks never move to the default one.
        org_id = ctx.org_of(Document, document_id) or ctx.org_of(Tool, tool_id) or ctx.default_org_id()
        v = {
            "id": legacy_uuid("document_chunks", chunk_lid), "legacy_id": chunk_lid, "org_id": org_id,
            "tool_id": tool_id, "document_id": document_id, "chunk_id": str(cid), "chunk_number": _chunk_number(cid),
            "text": text, "source": source or "", "chunk_type": rec.str("type", "document", null=True, max_length=50) or "",
            "table_data": table_data, "is_table": bool(is_table), "rows_count": rows_count, "in_index": True,
            "index_position": position, "legacy_extra": extra,
        }
        if record.get("type", "") is None:
            extra.setdefault(DANGLING, {})["type"] = None
        mapped.warnings.extend(warnings)
        mapped.rows.append(Row(DocumentChunk, v, merge=merge_from_index))
        return mapped

    def to_rows(self, record, ctx=None, outer_key=None, position=None):
        from legacy.errors import LegacyDataError, LegacyFieldError

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
            "doc_id": doc_value, "page_id": doc_value, "chunk_id": cid, "text": chunk.text,
            "source": None if "source" in dangling else chunk.source,
            "type": None if "type" in dangling else chunk.chunk_type,
            "table_data": chunk.table_data, "is_table": None if "is_table" in dangling else chunk.is_table,
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


# --- conversations ------------------------------------------------------------------------------

MESSAGE_ROLES = tuple(Message.Role.values)
CONV_DEFAULTS = {"user_id": None, "title": "New Conversation", "messages": [], "access_cache": None}
MESSAGE_DEFAULTS = {"tool_calls": [], "sources": [], "content": ""}


MESSAGE_KEYS = frozenset(MESSAGE_DEFAULTS) | {"id", "role", "timestamp"}


def _plain_message(message, org_id, conversation_id, position):
    """The hot path: a message with exactly the usual keys, well-typed. Returns the values the
    generic loop in ConversationMapper.map_record would build, or None for anything else (the
    generic loop then validates and names the field)."""
    if type(message) is not dict or message.keys() != MESSAGE_KEYS:
        return None
    mid, role, content, stamp = message["id"], message["role"], message["content"], message["timestamp"]
    tool_calls, sources = message["tool_calls"], message["sources"]
    if (type(mid) is not str or len(mid) > 128 or type(role) is not str or role not in MESSAGE_ROLES
            or type(content) is not str or type(tool_calls) is not list or type(sources) is not list
            or type(stamp) is not str):
        return None
    try:
        created_at = parse_timestamp(stamp)
    except ValueError:
        return None
    return {
        "id": legacy_uuid("messages", mid), "legacy_id": mid, "org_id": org_id, "conversation_id": conversation_id,
        "role": role, "content": content, "tool_calls": tool_calls, "sources": sources, "position": position,
        "created_at": created_at, "legacy_extra": {},
    }


class ConversationMapper(Mapper):
    model = Conversation
    pipeline = True  # big and plain: read and mapped in a second process (legacy.pipeline)
    satellites = (("messages", Message),)

    def map_record(self, record, ctx):
        from agents.models import Agent

        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        pk = self.pk(lid)
        org_id = _org_of(rec, ctx)
        agent_lid = rec.str("agent_id", None, null=True)
        agent_id = ctx.ref(Agent, agent_lid) if agent_lid else None
        if agent_lid is not None and agent_id is None:
            dangling["agent_id"] = agent_lid
            mapped.warnings.append(f"{where}: agent_id: {agent_lid!r} refers to no agent (conversation of a deleted agent)")
        v = {
            "id": pk, "legacy_id": lid, "org_id": org_id, "agent_id": agent_id,
            "user_id": _user_ref(ctx, rec, "user_id", dangling, mapped, where),
            "title": rec.str("title", "New Conversation", max_length=500),
            "access_cache": rec.json("access_cache", None),
        }
        for key in ("created_at", "updated_at"):
            value = rec.ts(key, None)
            if value is not None:
                v[key] = value
        messages = rec.list("messages", [])
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, "__org__": _org_book(rec)})
        mapped.rows.append(Row(Conversation, v))
        for position, message in enumerate(messages):
            values = _plain_message(message, org_id, pk, position)
            if values is not None:
                mapped.rows.append(Row(Message, values))
                continue
            if not isinstance(message, dict):
                rec.fail(f"messages[{position}]", "expected an object")
            mrec = Rec(message, f"messages[{position}].")
            mid = mrec.str("id", None, null=True, max_length=128)
            if mid is None:
                mid = f"{lid}:{position}"
            values = {
                "id": legacy_uuid("messages", mid), "legacy_id": mid, "org_id": org_id, "conversation_id": pk,
                "role": mrec.enum("role", MESSAGE_ROLES), "content": mrec.str("content", ""),
                "tool_calls": mrec.list("tool_calls", []), "sources": mrec.list("sources", []), "position": position,
            }
            stamp = mrec.ts("timestamp", None)
            if stamp is not None:
                values["created_at"] = stamp
            values["legacy_extra"] = legacy_extra(mrec)
            mapped.rows.append(Row(Message, values))
        return mapped

    def store_queryset(self):
        messages = Message.all_orgs.order_by("position")
        return self.export_queryset().prefetch_related(Prefetch("messages", messages, to_attr="ordered_messages"))

    def to_legacy(self, conv, ctx=None, messages=None):
        ctx = ctx or Context()
        extra = conv.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        if messages is None:
            messages = getattr(conv, "ordered_messages", None)
        if messages is None:
            messages = Message.all_orgs.filter(conversation_id=conv.pk).order_by("position")
        out = {
            "id": conv.legacy_id or str(conv.pk),
            "agent_id": ctx.legacy_id_of(Agent, conv.agent_id) if conv.agent_id else dangling.get("agent_id"),
            "user_id": _user_out(ctx, conv.user_id, dangling, "user_id"), "title": conv.title,
            "messages": [self.message_out(m) for m in messages],
            "created_at": ts_out(conv.created_at), "updated_at": ts_out(conv.updated_at), "access_cache": conv.access_cache,
        }
        out.update(_org_out(ctx, conv, extra))
        out.update(extra_items(extra))
        return omit_missing(out, extra, CONV_DEFAULTS)

    @staticmethod
    def message_out(message) -> dict:
        extra = message.legacy_extra or {}
        out = {"id": message.legacy_id or str(message.pk), "role": message.role, "content": message.content,
               "timestamp": ts_out(message.created_at), "tool_calls": message.tool_calls, "sources": message.sources}
        out.update(extra_items(extra))
        return omit_missing(out, extra, MESSAGE_DEFAULTS)


# --- top-level settings.json and integrations.json ----------------------------------------------

SETTINGS_SECRET_KEYS = {"api_key", "aws_access_key", "aws_secret_key", "gemini_key", "cloud_key", "pinecone_api_key",
                        "qdrant_api_key", "client_secret", "secret", "password", "token"}
SETTINGS_GROUP = "__group__"  # a row "<key>" with this marker: the key holds an object (maybe empty)


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return key in SETTINGS_SECRET_KEYS or lowered.endswith(("_key", "_secret", "password", "_token"))


class SystemSettingsMapper(Mapper):
    """Top-level ``settings.json``: one SystemSetting per scalar (``llm.model``), secrets
    (``llm.api_key``, ``llm_providers.0.api_key``) encrypted and flagged ``is_secret``."""

    model = SystemSetting
    prefix = ""

    def record_id(self, outer_key, record):
        return None

    def map_record(self, record, ctx):
        mapped = Mapped("settings")
        order = []
        for key, value in record.items():
            if not isinstance(key, str) or "." in key:
                raise LegacyFieldError(str(key), f"{key!r}: keys must not contain '.'")
            order.append(key)
            self._rows(self.prefix + key, value, mapped, top=True)
        mapped.rows.append(_system_row(self.prefix + "__order__", order))
        return mapped

    def _rows(self, key, value, mapped, top=False):
        if isinstance(value, dict) and top:
            mapped.rows.append(_system_row(key, {SETTINGS_GROUP: list(value.keys())}))
            for sub, subvalue in value.items():
                self._leaf(f"{key}.{sub}", sub, subvalue, mapped)
        else:
            self._leaf(key, key.rsplit(".", 1)[-1], value, mapped)

    def _leaf(self, key, name, value, mapped):
        if isinstance(value, str) and _is_secret_key(name):
            mapped.rows.append(_system_row(key, value, secret=True))
        elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
            plain = []
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    kept = {}
                    for sub, subvalue in item.items():
                        if isinstance(subvalue, str) and _is_secret_key(sub):
                            mapped.rows.append(_system_row(f"{key}.{index}.{sub}", subvalue, secret=True))
                            kept[sub] = {"__secret__": True}
                        else:
                            kept[sub] = subvalue
                    plain.append(kept)
                else:
                    plain.append(item)
            mapped.rows.append(_system_row(key, plain))
        else:
            mapped.rows.append(_system_row(key, value))

    def export(self, ctx) -> dict | None:
        rows = {}
        for setting in SystemSetting.objects.order_by("id"):
            rows[setting.key] = setting.get_value()
        prefix = self.prefix
        order = rows.get(prefix + "__order__")
        if order is None:
            return None
        out = {}
        for key in order:
            value = rows.get(prefix + key)
            if isinstance(value, dict) and SETTINGS_GROUP in value:
                out[key] = {sub: self._value(rows, f"{prefix}{key}.{sub}") for sub in value[SETTINGS_GROUP]}
            else:
                out[key] = self._value(rows, prefix + key)
        return out

    def _value(self, rows, key):
        value = rows.get(key)
        if isinstance(value, list):
            rebuilt = []
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    item = {sub: rows.get(f"{key}.{index}.{sub}", "") if isinstance(v, dict) and v.get("__secret__") else v
                            for sub, v in item.items()}
                rebuilt.append(item)
            return rebuilt
        return value


class IntegrationsMapper(SystemSettingsMapper):
    """``integrations.json``: ``{provider: {client_id, client_secret}}`` → ``integrations.*`` rows."""

    prefix = "integrations."


# --- records without a table of their own -> LegacyRecord ----------------------------------------

INVITATIONS = "security/invitations"


def revoked_invitation_token(digest: str) -> str:
    """A token for an invitation whose plaintext was never kept (rows imported before tokens were
    kept encrypted): AgentForge requires a string, and no old link may match it. Deterministic
    (parity stays clean), and unguessable without SECRET_KEY."""
    from django.conf import settings

    return hmac.new(settings.SECRET_KEY.encode("utf-8"), digest.encode("ascii"), hashlib.sha256).hexdigest()[:32]


class LegacyRecordMapper(Mapper):
    """Policies, invitations, kb/db permissions: kept verbatim in ``legacy_records``.

    An invitation's token is a secret: ``data`` keeps only its SHA-256 (``token_sha256``) and the
    plaintext is encrypted in ``secret``, so the export (and the dual-write store) hands AgentForge
    the invitation as it was and a pending invitation still works after a rollback.
    """

    model = LegacyRecord

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        org_legacy = record.get("org_id")
        org_id = ctx.ref(Organization, org_legacy) if isinstance(org_legacy, str) else None
        if org_id is None:
            if org_legacy is not None:
                mapped.warnings.append(f"{where}: org_id: {org_legacy!r} refers to no organization (kept under org_default)")
            org_id = ctx.default_org_id()
        data, secret = dict(record), None
        if self.collection == INVITATIONS and isinstance(data.get("token"), str):
            secret = data["token"]
            data["token_sha256"] = sha256_hex(secret)
            data["token"] = None
            mapped.notes.append("invitation token kept encrypted (its SHA-256 beside it)")
        mapped.rows.append(Row(LegacyRecord, {"org_id": org_id, "collection": self.collection, "legacy_id": lid,
                                              "data": data, "secret": secret},
                               key_fields=("collection", "legacy_id")))
        return mapped

    def to_legacy(self, row, ctx=None):
        data = dict(row.data)
        if self.collection == INVITATIONS:
            digest = data.pop("token_sha256", None)
            if data.get("token") is None and (row.secret or digest):
                data["token"] = row.secret or revoked_invitation_token(digest)
        return data

    def export_queryset(self):
        return LegacyRecord.all_orgs.filter(collection=self.collection).order_by("id")

    def export_key(self, instance, record):
        return instance.legacy_id


class LabMapper(Mapper):
    """Demo-Lab JSON files (``lab/<uuid>.json``, ``lab/<uuid>_meta.json``) → LegacyRecord
    rows with ``collection="lab"`` and the file name as id."""

    collection = "lab"
    model = LegacyRecord
    container = "file"
    stream = False

    def __init__(self):
        """No entry in legacy.collections: ``lab/`` is a folder of single-object files."""

    def map_file(self, name: str, data, ctx) -> Mapped:
        mapped = Mapped(name)
        org_legacy = data.get("org_id") if isinstance(data, dict) else None
        org_id = ctx.ref(Organization, org_legacy) if isinstance(org_legacy, str) else None
        if org_id is None:
            try:
                org_id = ctx.default_org_id()
            except LegacyFieldError as exc:
                raise LegacyDataError(f"lab/{name}", exc.message, None, exc.field) from None
        mapped.rows.append(Row(LegacyRecord, {"org_id": org_id, "collection": "lab", "legacy_id": name, "data": data},
                               key_fields=("collection", "legacy_id")))
        return mapped

    def to_legacy(self, row, ctx=None):
        return row.data

    def export_queryset(self):
        return LegacyRecord.all_orgs.filter(collection="lab").order_by("legacy_id")
