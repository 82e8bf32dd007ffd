"""Helpers shared by the mappers: references that may dangle, ordered id lists."""

from __future__ import annotations

from legacy.format.mappers.base import Context

DANGLING = "__dangling__"  # legacy_extra: {"field": value or [[position, id], ...]}
LISTS = "__lists__"  # legacy_extra: original id lists whose order/duplicates the tables lose


def ref_or_keep(ctx: Context, model, legacy_id, field: str, dangling: dict, warnings: list, where: str, warn=True):
    """The pk for a reference; a dangling one is kept in ``dangling[field]`` (and warned about)."""
    if legacy_id is None:
        return None
    pk = ctx.ref(model, legacy_id) if isinstance(legacy_id, str) else None
    if pk is None:
        dangling[field] = legacy_id
        if warn:
            warnings.append(f"{where}: {field}: {legacy_id!r} refers to no {model._meta.verbose_name}")
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
