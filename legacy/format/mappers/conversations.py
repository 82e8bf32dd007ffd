"""Mapper for the ``conversations`` tables: conversations and their messages
(``conversations.json``, docs/legacy-format.md §4)."""

from __future__ import annotations

from django.db.models import Prefetch

from accounts.models import User
from agentforge_agents.models import Agent
from agentforge_core import native
from agentforge_core.models import legacy_uuid
from conversations.models import Conversation, Message
from legacy.format.jsonio import parse_timestamp
from legacy.format.mappers.base import (
    Context,
    Mapper,
    Rec,
    Row,
    extra_items,
    legacy_extra,
    omit_missing,
    record_shape,
    ts_out,
)
from legacy.format.mappers.common import (
    ANOTHER_ORG,
    DANGLING,
    app_file_org,
    app_file_org_book,
    app_file_org_out,
    field_ref,
    same_org,
    user_out,
)

MESSAGE_ROLES = tuple(Message.Role.values)
CONV_DEFAULTS = {"user_id": None, "title": "New Conversation", "messages": [], "access_cache": None}
MESSAGE_DEFAULTS = {"tool_calls": [], "sources": [], "content": ""}


# The plain path's message: exactly the usual keys (MESSAGE_DEFAULTS, id, role, timestamp)
PLAIN_MESSAGE = record_shape(
    (
        ("id", native.SHAPE_TEXT, 128),
        ("role", native.SHAPE_TEXT, 0),
        ("content", native.SHAPE_TEXT, 0),
        ("tool_calls", native.SHAPE_LIST, 0),
        ("sources", native.SHAPE_LIST, 0),
        ("timestamp", native.SHAPE_TEXT, 0),
    )
)


def _plain_message(message, org_id, conversation_id, position):
    """The hot path: a message with exactly the usual keys, well-typed. Returns the values the
    generic loop in ConversationMapper.map_record would build, or None for anything else (the
    generic loop then validates and names the field)."""
    values = PLAIN_MESSAGE(message)
    if values is None:
        return None
    mid, role, content, tool_calls, sources, stamp = values
    if role not in MESSAGE_ROLES:
        return None
    try:
        created_at = parse_timestamp(stamp)
    except ValueError:
        return None
    return {
        "id": legacy_uuid("messages", mid),
        "legacy_id": mid,
        "org_id": org_id,
        "conversation_id": conversation_id,
        "role": role,
        "content": content,
        "tool_calls": tool_calls,
        "sources": sources,
        "position": position,
        "created_at": created_at,
        "legacy_extra": {},
    }


class ConversationMapper(Mapper):
    model = Conversation
    pipeline = True  # big and plain: read and mapped in a second process (legacy.migration.pipeline)
    satellites = (("messages", Message),)

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        pk = self.pk(lid)
        org_id = app_file_org(rec, ctx)
        agent_lid = rec.str("agent_id", None, null=True)
        agent_id = ctx.ref(Agent, agent_lid) if agent_lid else None
        if agent_lid is not None and agent_id is None:
            dangling["agent_id"] = agent_lid
            mapped.warnings.append(
                f"{where}: agent_id: {agent_lid!r} refers to no agent (conversation of a deleted agent)"
            )
        elif agent_id is not None and not same_org(ctx, Agent, agent_lid, agent_id, org_id):
            dangling["agent_id"] = agent_lid
            agent_id = None
            mapped.warnings.append(f"{where}: agent_id: {agent_lid!r} {ANOTHER_ORG}")
        v = {
            "id": pk,
            "legacy_id": lid,
            "org_id": org_id,
            "agent_id": agent_id,
            "user_id": field_ref(ctx, rec, User, "user_id", dangling, mapped, where, org=org_id),
            "title": rec.str("title", "New Conversation", max_length=500),
            "access_cache": rec.json("access_cache", None),
        }
        for key in ("created_at", "updated_at"):
            value = rec.ts(key, None)
            if value is not None:
                v[key] = value
        messages = rec.list("messages", [])
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, "__org__": app_file_org_book(rec)})
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
                "id": legacy_uuid("messages", mid),
                "legacy_id": mid,
                "org_id": org_id,
                "conversation_id": pk,
                "role": mrec.enum("role", MESSAGE_ROLES),
                "content": mrec.str("content", ""),
                "tool_calls": mrec.list("tool_calls", []),
                "sources": mrec.list("sources", []),
                "position": position,
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
            "user_id": user_out(ctx, conv.user_id, dangling, "user_id"),
            "title": conv.title,
            "messages": [self.message_out(m) for m in messages],
            "created_at": ts_out(conv.created_at),
            "updated_at": ts_out(conv.updated_at),
            "access_cache": conv.access_cache,
        }
        out.update(app_file_org_out(ctx, conv, extra))
        out.update(extra_items(extra))
        return omit_missing(out, extra, CONV_DEFAULTS)

    @staticmethod
    def message_out(message) -> dict:
        extra = message.legacy_extra or {}
        out = {
            "id": message.legacy_id or str(message.pk),
            "role": message.role,
            "content": message.content,
            "timestamp": ts_out(message.created_at),
            "tool_calls": message.tool_calls,
            "sources": message.sources,
        }
        out.update(extra_items(extra))
        return omit_missing(out, extra, MESSAGE_DEFAULTS)
