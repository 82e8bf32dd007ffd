"""``/health/``: JSON for load balancers (anonymous), organization admins and operators (superusers)."""

from __future__ import annotations

import logging

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accounts.models import User
from agentforge_agents.models import Agent
from conversations.models import Conversation
from knowledge.models import Document
from operations.health import build_report, database_switch, public_view

logger = logging.getLogger("agentforge.health")


def _audience(request) -> str:
    """``platform`` (an active superuser), ``organization`` (other staff) or ``public``."""
    user = getattr(request, "user", None)
    if database_switch.is_down():  # loading the user reads the session table
        return "public"
    try:
        if user is None or not user.is_authenticated or not user.is_active:
            return "public"
        return "platform" if user.is_superuser else "organization" if user.is_staff else "public"
    except Exception:  # the session store itself is in the database that may be down
        return "public"


def organization_figures(org_id) -> dict:
    """An organization's own row counts: what its admin may see instead of the platform's."""
    figures = {"id": str(org_id)}
    for name, model in (("users", User), ("agents", Agent), ("conversations", Conversation), ("documents", Document)):
        figures[name] = model.all_orgs.filter(org_id=org_id).count()
    return figures


@never_cache
@require_GET
def health(request):
    """200 when healthy, 503 when not. Superusers also get the per-check breakdown (server
    version, table sizes, slow statements, replicas); an organization's staff get the public
    status and their own organization's figures, nothing of the platform."""
    audience = _audience(request)
    try:
        report = build_report(tables=10 if audience == "platform" else 0)
    except Exception as exc:  # never a traceback to a load balancer
        logger.exception("health check failed")
        report = {
            "status": "unhealthy",
            "healthy": False,
            "reasons": [f"health check failed: {type(exc).__name__}"],
            "alerts": [],
            "checked_at": None,
            "checks": {},
        }
    body = report if audience == "platform" else public_view(report)
    if audience == "organization" and report["healthy"]:
        try:
            body["organization"] = organization_figures(request.user.org_id)
        except Exception:
            logger.exception("organization figures failed")
    return JsonResponse(body, status=200 if report["healthy"] else 503)
