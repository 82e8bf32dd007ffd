"""How values look in the admin's lists and pages."""

from __future__ import annotations

import json

from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils.html import format_html

from security.forms import MASK


def masked(value) -> str:
    """How a secret looks anywhere in the admin: never its value."""
    if value in (None, "", {}, []):
        return "— (not set)"
    if isinstance(value, dict):
        keys = ", ".join(sorted(str(k) for k in value)) or "—"
        return f"{MASK} (set: {keys})"
    return f"{MASK} (set)"


def json_block(value):
    """Pretty JSON in a <pre>, escaped."""
    if value in (None, ""):
        return "—"
    return format_html(
        '<pre class="af-json">{}</pre>', json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    )


def truncate(text, length: int = 80) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= length else text[: length - 1] + "…"


def count_subquery(model, fk_name: str, **filters):
    """``Coalesce((SELECT COUNT(*) FROM model WHERE fk = outer.pk), 0)``: no GROUP BY on the list."""
    # The default manager: in a scoped statement (an organization admin's list) a subquery must be
    # scoped too; a superuser's list runs unscoped and counts every row.
    sub = (
        model._default_manager.filter(**{fk_name: OuterRef("pk")}, **filters)
        .order_by()
        .values(fk_name)
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(sub, output_field=IntegerField()), Value(0))
