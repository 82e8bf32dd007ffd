"""``/health/``: JSON for load balancers (anonymous) and operators (staff)."""

from __future__ import annotations

import logging

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from operations.health import build_report, database_switch, public_view

logger = logging.getLogger("agentforge.health")


@never_cache
@require_GET
def health(request):
    """200 when healthy, 503 when not; staff also get the per-check breakdown and table sizes."""
    user = getattr(request, "user", None)
    try:
        # Loading the user reads the session table: not while the database is known to be down.
        staff = bool(not database_switch.is_down() and user is not None and user.is_authenticated and user.is_staff)
    except Exception:  # the session store itself is in the database that may be down
        staff = False
    try:
        report = build_report(tables=10 if staff else 0)
    except Exception as exc:  # never a traceback to a load balancer
        logger.exception("health check failed")
        report = {"status": "unhealthy", "healthy": False, "reasons": [f"health check failed: {type(exc).__name__}"],
                  "alerts": [], "checked_at": None, "checks": {}}
    body = report if staff else public_view(report)
    return JsonResponse(body, status=200 if report["healthy"] else 503)
