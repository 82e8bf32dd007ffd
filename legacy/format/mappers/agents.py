"""Mappers for the ``agents`` tables: agents, tools (``agents.json``, ``tools.json``,
docs/legacy-format.md §4) and tool permissions (``security/tool_permissions.json``, §3)."""

from __future__ import annotations

import copy

from django.db.models import Prefetch

from accounts.models import User
from agentforge_agents.models import Agent, AgentTool, Tool, ToolPermission, extract_secrets, merge_secrets
from legacy.format.mappers.base import ChildSet, Context, Mapper, Row, extra_items, legacy_extra, omit_missing, ts_out
from legacy.format.mappers.common import (
    ANOTHER_ORG,
    DANGLING,
    app_file_org,
    app_file_org_book,
    app_file_org_out,
    field_ref,
    finish_row,
    org_legacy_id,
    ref_or_keep,
    same_org,
    security_file_org,
    user_out,
)

# --- agents -------------------------------------------------------------------------------------

AGENT_DEFAULTS = {
    "icon": "\U0001f916",
    "goal": "",
    "agent_type": "conversational",
    "personality": {},
    "guardrails": {},
    "tasks": [],
    "tool_ids": [],
    "model_id": "",
    "status": "draft",
    "is_active": True,
    "memory": [],
    "memory_enabled": False,
    "owner_id": None,
    "created_by": None,
    "process_definition": None,
    "process_settings": None,
}


def strip_tool_prefix(ref: str) -> str:
    for prefix in ("api:", "kb:"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


class AgentMapper(Mapper):
    model = Agent
    satellites = (("agent_tools", AgentTool),)

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        pk = self.pk(lid)
        org_id = app_file_org(rec, ctx)
        v = {
            "id": pk,
            "legacy_id": lid,
            "org_id": org_id,
            "name": rec.str("name", max_length=255),
            "icon": rec.str("icon", "\U0001f916", max_length=32),
            "goal": rec.str("goal", ""),
            "agent_type": rec.enum("agent_type", Agent.AgentType.choices, "conversational"),
            "personality": rec.dict("personality", {}),
            "guardrails": rec.dict("guardrails", {}),
            "tasks": rec.list("tasks", []),
            "model_id": rec.str("model_id", "", max_length=100),
            "status": rec.enum("status", Agent.Status.choices, "draft"),
            "is_active": rec.bool("is_active", True),
            "memory": rec.list("memory", []),
            "memory_enabled": rec.bool("memory_enabled", False),
            "owner_id": field_ref(ctx, rec, User, "owner_id", dangling, mapped, where, org=org_id),
            "created_by_id": field_ref(ctx, rec, User, "created_by", dangling, mapped, where, org=org_id),
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
            elif not same_org(ctx, Tool, strip_tool_prefix(ref), tool_pk, org_id):
                tool_pk = None
                mapped.warnings.append(f"{where}: tool_ids: {ref!r} {ANOTHER_ORG}")
            tool_rows.append(
                {"org_id": org_id, "agent_id": pk, "tool_id": tool_pk, "tool_ref": ref, "position": position}
            )
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, "__org__": app_file_org_book(rec)})
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
            tool_ids = list(
                AgentTool.all_orgs.filter(agent_id=agent.pk).order_by("position").values_list("tool_ref", flat=True)
            )
        out = {
            "id": agent.legacy_id or str(agent.pk),
            "name": agent.name,
            "icon": agent.icon,
            "goal": agent.goal,
            "agent_type": agent.agent_type,
            "personality": agent.personality,
            "guardrails": agent.guardrails,
            "tasks": agent.tasks,
            "tool_ids": tool_ids,
            "model_id": agent.model_id,
            "created_at": ts_out(agent.created_at),
            "updated_at": ts_out(agent.updated_at),
            "status": agent.status,
            "is_active": agent.is_active,
            "memory": agent.memory,
            "memory_enabled": agent.memory_enabled,
            "owner_id": user_out(ctx, agent.owner_id, dangling, "owner_id"),
            "created_by": user_out(ctx, agent.created_by_id, dangling, "created_by"),
            "process_definition": agent.process_definition,
            "process_settings": agent.process_settings,
        }
        out.update(app_file_org_out(ctx, agent, extra))
        out.update(extra_items(extra))
        return omit_missing(out, extra, AGENT_DEFAULTS)


# --- tools --------------------------------------------------------------------------------------

TOOL_DEFAULTS = {
    "description": "",
    "config": {},
    "api_config": None,
    "kb_config": None,
    "is_active": True,
    "access_type": "owner_only",
    "allowed_user_ids": [],
    "allowed_group_ids": [],
    "can_edit_user_ids": [],
    "can_delete_user_ids": [],
    "can_execute_user_ids": [],
    "owner_id": None,
}


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
        org_id = app_file_org(rec, ctx)
        ctx.note_org(Tool, self.pk(lid), org_id)
        v = {
            "id": self.pk(lid),
            "legacy_id": lid,
            "org_id": org_id,
            # AgentForge's ToolConfiguration.type is a free string (its UI also makes "spreadsheet" tools).
            "type": rec.str("type", max_length=Tool._meta.get_field("type").max_length),
            "name": rec.str("name", max_length=255),
            "description": rec.str("description", ""),
            **configs,
            "credentials": creds,
            "is_active": rec.bool("is_active", True),
            # "" is ToolConfiguration.owner_id's default (no owner): kept for the export, not a reference
            "owner_id": None
            if system_owned
            else ref_or_keep(
                ctx, User, owner, "owner_id", dangling, mapped.warnings, where, warn=owner != "", org=org_id
            ),
            "system_owned": system_owned,
            "access_type": rec.enum("access_type", Tool.AccessType.choices, "owner_only"),
        }
        if v["type"] not in Tool.Type.values:
            mapped.warnings.append(f"{where}: type: {v['type']!r} is not a known tool type (kept)")
        for key in (
            "allowed_user_ids",
            "allowed_group_ids",
            "can_edit_user_ids",
            "can_delete_user_ids",
            "can_execute_user_ids",
        ):
            v[key] = rec.list(key, [])
        created = rec.ts("created_at", None)
        if created is not None:
            v["created_at"] = created
        v["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None, "__org__": app_file_org_book(rec)})
        mapped.rows.append(Row(Tool, v))
        return mapped

    def to_legacy(self, tool, ctx=None):
        ctx = ctx or Context()
        extra = tool.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        configs = {
            "config": copy.deepcopy(tool.config),
            "api_config": copy.deepcopy(tool.api_config),
            "kb_config": copy.deepcopy(tool.kb_config),
        }
        merge_secrets(configs, tool.credentials)
        out = {
            "id": tool.legacy_id or str(tool.pk),
            "type": tool.type,
            "name": tool.name,
            "description": tool.description,
            **configs,
            "created_at": ts_out(tool.created_at),
            "is_active": tool.is_active,
            "owner_id": "system" if tool.system_owned else user_out(ctx, tool.owner_id, dangling, "owner_id"),
            "access_type": tool.access_type,
        }
        for key in (
            "allowed_user_ids",
            "allowed_group_ids",
            "can_edit_user_ids",
            "can_delete_user_ids",
            "can_execute_user_ids",
        ):
            out[key] = getattr(tool, key)
        out.update(app_file_org_out(ctx, tool, extra))
        out.update(extra_items(extra))
        return omit_missing(out, extra, TOOL_DEFAULTS)


# --- tool permissions ------------------------------------------------------------------------------


class ToolPermissionMapper(Mapper):
    model = ToolPermission
    DEFAULTS = {
        "can_view": True,
        "can_execute": True,
        "can_edit": False,
        "can_delete": False,
        "allowed_actions": [],
        "denied_actions": [],
        "rate_limit_per_hour": None,
        "rate_limit_per_day": None,
        "allowed_hours_start": None,
        "allowed_hours_end": None,
        "allowed_days": [0, 1, 2, 3, 4, 5, 6],
        "allowed_ips": [],
        "denied_ips": [],
        "data_scope": None,
        "created_by": None,
        "role_ids": [],
        "user_ids": [],
        "group_ids": [],
        "tool_name": None,
    }

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        dangling = {}
        org_id = security_file_org(rec, ctx, dangling)
        v = {
            "id": self.pk(lid),
            "legacy_id": lid,
            "org_id": org_id,
            "tool_id": field_ref(ctx, rec, Tool, "tool_id", dangling, mapped, where, org=org_id),
            "tool_name": rec.str("tool_name", None, null=True, max_length=255),
            "role_ids": rec.list("role_ids", [], of=str),
            "user_ids": rec.list("user_ids", [], of=str),
            "group_ids": rec.list("group_ids", [], of=str),
            "can_view": rec.bool("can_view", True),
            "can_execute": rec.bool("can_execute", True),
            "can_edit": rec.bool("can_edit", False),
            "can_delete": rec.bool("can_delete", False),
            "allowed_actions": rec.list("allowed_actions", []),
            "denied_actions": rec.list("denied_actions", []),
            "rate_limit_per_hour": rec.int("rate_limit_per_hour", None, null=True),
            "rate_limit_per_day": rec.int("rate_limit_per_day", None, null=True),
            "allowed_hours_start": rec.int("allowed_hours_start", None, null=True, minimum=0, maximum=23),
            "allowed_hours_end": rec.int("allowed_hours_end", None, null=True, minimum=0, maximum=23),
            "allowed_days": rec.list("allowed_days", [0, 1, 2, 3, 4, 5, 6]),
            "allowed_ips": rec.list("allowed_ips", []),
            "denied_ips": rec.list("denied_ips", []),
            "data_scope": rec.dict("data_scope", None, null=True),
            "created_by_id": field_ref(ctx, rec, User, "created_by", dangling, mapped, where, org=org_id),
        }
        return finish_row(rec, v, ToolPermission, mapped, dangling)

    def to_legacy(self, perm, ctx=None):
        ctx = ctx or Context()
        extra = perm.legacy_extra or {}
        dangling = extra.get(DANGLING) or {}
        out = {
            "id": perm.legacy_id or str(perm.pk),
            "org_id": org_legacy_id(ctx, perm),
            "tool_id": ctx.legacy_id_of(Tool, perm.tool_id) if perm.tool_id else dangling.get("tool_id"),
        }
        for name in (
            "tool_name",
            "role_ids",
            "user_ids",
            "group_ids",
            "can_view",
            "can_execute",
            "can_edit",
            "can_delete",
            "allowed_actions",
            "denied_actions",
            "rate_limit_per_hour",
            "rate_limit_per_day",
            "allowed_hours_start",
            "allowed_hours_end",
            "allowed_days",
            "allowed_ips",
            "denied_ips",
            "data_scope",
        ):
            out[name] = getattr(perm, name)
        out["created_at"], out["updated_at"] = ts_out(perm.created_at), ts_out(perm.updated_at)
        out["created_by"] = (
            ctx.legacy_id_of(User, perm.created_by_id) if perm.created_by_id else dangling.get("created_by")
        )
        out.update(extra_items(extra))
        return omit_missing(out, extra, self.DEFAULTS)
