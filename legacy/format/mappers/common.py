"""Helpers shared by the mappers: organizations, references that may dangle, ordered id lists.

AgentForge's security files (``security/*.json``) name their organization in ``org_id``; its
app files (agents, tools, documents, conversations) name none and belong to ``org_default``.
The two conventions cut across the target apps (tool permissions are a security file), so
their helpers live here."""

from __future__ import annotations

from accounts.models import Department, Organization, Role, User
from agentforge_agents.models import Agent, Tool
from legacy.format.mappers.base import Context, Rec, Row, legacy_extra

DANGLING = "__dangling__"  # legacy_extra: {"field": value or [[position, id], ...]}
LISTS = "__lists__"  # legacy_extra: original id lists whose order/duplicates the tables lose


def ref_or_keep(
    ctx: Context, model, legacy_id, field: str, dangling: dict, warnings: list, where: str, warn=True, org=None
):
    """The pk for a reference; a dangling one is kept in ``dangling[field]`` (and warned about).

    With ``org`` (the referring row's organization), a row of another organization is kept the
    same way: the database refuses a link across organizations (composite keys on PostgreSQL and
    MariaDB), and AgentForge writes such links (docs/legacy-format.md §6).

    ``""`` is no reference (AgentForge's database converters write it for a NULL id column,
    ``str(x) if x else ""``): kept for the export, without a warning."""
    if legacy_id is None:
        return None
    if legacy_id == "":
        dangling[field] = ""
        return None
    pk = ctx.ref(model, legacy_id) if isinstance(legacy_id, str) else None
    if pk is None:
        dangling[field] = legacy_id
        if warn:
            warnings.append(f"{where}: {field}: {legacy_id!r} refers to no {model._meta.verbose_name}")
    elif org is not None and not same_org(ctx, model, legacy_id, pk, org):
        dangling[field] = legacy_id
        warnings.append(f"{where}: {field}: {legacy_id!r} {ANOTHER_ORG}")
        return None
    return pk


def split_refs(ctx: Context, model, ids: list, field: str, dangling: dict, warnings: list, where: str):
    """Resolve a list of ids: ``[(position, legacy_id, pk)]`` without duplicates; the rest
    (dangling ids, repeats) is kept as ``dangling[field] = [[position, id], ...]``."""
    resolved, leftovers, seen = [], [], set()
    for position, legacy_id in enumerate(ids):
        pk = ctx.ref(model, legacy_id) if isinstance(legacy_id, str) else None
        if pk is None or pk in seen:
            leftovers.append([position, legacy_id])
            if pk is None:
                warnings.append(f"{where}: {field}: {legacy_id!r} refers to no {model._meta.verbose_name}")
            continue
        seen.add(pk)
        resolved.append((position, legacy_id, pk))
    if leftovers:
        dangling[field] = leftovers
    return resolved


def rebuild_list(current: list, leftovers) -> list:
    """Current (resolved) ids in order, with the kept leftovers put back at their positions."""
    out = list(current)
    for position, value in sorted(leftovers or [], key=lambda item: item[0]):
        out.insert(min(position, len(out)), value)
    return out


def original_or_current(original, resolvable: set, current: list) -> list:
    """Export an id list: the original (order, repeats, dangling ids) while the resolvable
    part still matches the database, otherwise the database's current list."""
    if original is not None and resolvable == set(current):
        return list(original)
    return list(current)


def security_file_org(rec: Rec, ctx: Context, dangling: dict):
    """The organization a security-file record names in ``org_id`` (``org_default`` when the
    key is absent or ``""``); it must exist.

    ``""`` is what AgentForge's database converters write for a row without an organization
    (``str(org_id) if org_id else ""``, docs/legacy-format.md §3.1); AgentForge still finds and
    signs in such a user, so the record goes to ``org_default`` like one without the key, and the
    ``""`` is kept in ``dangling`` for the export (:func:`org_legacy_id`)."""
    org_legacy = rec.str("org_id", None)
    if org_legacy == "":
        dangling["org_id"] = ""
    pk = ctx.ref(Organization, org_legacy or "org_default")
    if pk is None:
        rec.fail("org_id", f"{org_legacy!r} refers to no organization" + ("" if org_legacy else " (nor org_default)"))
    return pk


ANOTHER_ORG = "belongs to another organization (kept as a dangling reference)"
# ctx.raw books (legacy.migration.importer): legacy id -> the organization's legacy id, per model
ORG_BOOKS = {
    Role: "role_orgs",
    User: "user_orgs",
    Department: "department_orgs",
    Tool: "tool_orgs",
    Agent: "agent_orgs",
}


def referenced_org(ctx: Context, model, legacy_id: str, pk):
    """The organization (primary key) of row ``legacy_id`` of ``model`` (one of ORG_BOOKS): from
    the files being imported (``ctx.raw``), else from the database."""
    book = ctx.raw.get(ORG_BOOKS[model]) or {}
    if legacy_id in book:
        return ctx.ref(Organization, book[legacy_id])
    return ctx.org_of(model, pk)


def same_org(ctx: Context, model, legacy_id: str, pk, org_pk) -> bool:
    """Whether the referenced row belongs to ``org_pk`` (or its organization is unknown)."""
    return referenced_org(ctx, model, legacy_id, pk) in (org_pk, None)


def own_org_role(ctx: Context, legacy_id: str, org_pk):
    """The role's primary key when the role belongs to ``org_pk``, else None: AgentForge lets an
    identity provider default to another organization's role (``role_user`` of org_default),
    a link the database refuses; the reference is kept as dangling and exported unchanged."""
    pk = ctx.ref(Role, legacy_id)
    if pk is None:
        return None
    return pk if referenced_org(ctx, Role, legacy_id, pk) == org_pk else None


def own_org_refs(ctx: Context, model, resolved: list, org_pk, field: str, dangling: dict, warnings: list, where: str):
    """``resolved`` (from split_refs) without the rows of another organization: AgentForge lets
    a user hold, or a group grant, a role of another organization (``role_user`` of
    org_default), a link the database refuses. Those ids join the dangling ones, at their
    positions, and are exported unchanged."""
    kept = []
    for position, legacy_id, pk in resolved:
        if referenced_org(ctx, model, legacy_id, pk) in (org_pk, None):
            kept.append((position, legacy_id, pk))
            continue
        dangling.setdefault(field, []).append([position, legacy_id])
        warnings.append(f"{where}: {field}: {legacy_id!r} {ANOTHER_ORG}")
    if field in dangling:
        dangling[field].sort(key=lambda item: item[0])
    return kept


def org_legacy_id(ctx: Context, instance) -> str:
    """The ``org_id`` to export: the organization's legacy id, or the ``""`` the record had."""
    if ((getattr(instance, "legacy_extra", None) or {}).get(DANGLING) or {}).get("org_id") == "":
        return ""
    return ctx.legacy_id_of(Organization, instance.org_id)


def set_timestamps(rec: Rec, values: dict, *names):
    for name in names:
        value = rec.ts(name, None)
        if value is not None:
            values[name] = value


def finish_row(rec: Rec, values: dict, model, mapped, dangling: dict):
    """The common end of a simple mapper: timestamps, leftovers and dangling ids, the row."""
    set_timestamps(rec, values, "created_at", "updated_at")
    values["legacy_extra"] = legacy_extra(rec, **{DANGLING: dangling or None})
    mapped.rows.append(Row(model, values))
    return mapped


def app_file_org(rec: Rec, ctx: Context):
    """App records carry no org_id: everything belongs to org_default (an explicit one wins)."""
    if rec.has("org_id"):
        legacy = rec.str("org_id", None, null=True)
        pk = ctx.ref(Organization, legacy) if legacy else None
        if pk is None:
            rec.fail("org_id", f"{legacy!r} refers to no organization")
        return pk
    return ctx.default_org_id()


def app_file_org_out(ctx, instance, extra):
    if "org_id" in (extra.get("__org__") or ()):
        return {"org_id": ctx.legacy_id_of(Organization, instance.org_id)}
    return {}


def app_file_org_book(rec: Rec):
    return ["org_id"] if rec.has("org_id") else None


def field_ref(ctx, rec, model, key, dangling, mapped, where, org=None):
    """:func:`ref_or_keep` for the record's field ``key`` (an id or null), kept under its own name."""
    return ref_or_keep(ctx, model, rec.str(key, None, null=True), key, dangling, mapped.warnings, where, org=org)


def user_out(ctx, pk, dangling, key):
    return ctx.legacy_id_of(User, pk) if pk else dangling.get(key)
