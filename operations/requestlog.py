"""Request ids and logging for the served application.

Every request gets an id: a load balancer's ``X-Request-ID`` when a trusted proxy sent a sane
one, a fresh UUID otherwise. It goes back in the response's ``X-Request-ID`` header, onto every
log record written while the request runs (``%(request_id)s``), and into the audit context
(``security.middleware``). A request that fails is logged by Django's ``django.request`` logger
with that id; a database that cannot be reached answers 503 with ``Retry-After`` instead of 500,
so a load balancer retries elsewhere and the operator sees an outage, not a bug. Once such an error
is confirmed by a probe, ``DatabaseDownMiddleware`` answers that 503 at once, before anything
waits on the database, until the database is back (``operations.health.database_switch``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar

from django import db
from django.http import HttpResponse
from django.utils.html import escape

from operations.health import database_switch
from security.middleware import from_trusted_proxy

REQUEST_ID_HEADER = "X-Request-ID"
# What a proxy's id may look like: UUIDs, hex, and the dotted/dashed forms load balancers use.
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
RETRY_AFTER_S = 5

_request_id: ContextVar[str | None] = ContextVar("agentforge_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served in this context (None outside one)."""
    return _request_id.get()


class RequestIdMiddleware:
    """First in MIDDLEWARE, so the id covers every other middleware and the error responses."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        if incoming and _SANE_ID.fullmatch(incoming) and from_trusted_proxy(request):
            request_id = incoming
        else:
            request_id = uuid.uuid4().hex
        request.request_id = request_id
        token = _request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response


def _database_down(exc: BaseException | None) -> bool:
    # A pool that cannot hand out a connection, a refused connection and a connection lost
    # mid-query all arrive as Django's OperationalError/InterfaceError; so do a deadlock and a
    # serialization failure, which are worth retrying too.
    return isinstance(exc, (db.OperationalError, db.InterfaceError))


def unavailable_response(
    request, title: str = "Service unavailable: the database is not answering. Try again shortly.", status: int = 503
) -> HttpResponse:
    """The error page of a 503 (with Retry-After) or a 500, naming the request id."""
    request_id = getattr(request, "request_id", None) or current_request_id() or "-"
    body = (
        f"<!doctype html><title>{status}</title><h1>{escape(title)}</h1>"
        f"<p>Request id: <code>{escape(request_id)}</code></p>"
    )
    response = HttpResponse(body, status=status)
    if status == 503:
        response["Retry-After"] = str(RETRY_AFTER_S)
    return response


def server_error(request, *args, **kwargs):
    """handler500: 503 when the database is not answering, else 500; both name the request id."""
    exc = sys.exc_info()[1]
    if _database_down(exc):
        # A refused connection, or only a busy pool or a deadlock? The probe tells them apart.
        database_switch.confirm_down()
        return unavailable_response(request)
    return unavailable_response(request, "Server error.", status=500)


class DatabaseDownMiddleware:
    """While this process knows the database is down, answer 503 before anything waits on it.

    After WhiteNoise (static files need no database) and before the session and the user are
    loaded. /health/ goes through: it reports the outage itself, also without waiting.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if database_switch.is_down() and request.path_info != "/health/":
            return unavailable_response(request)
        return self.get_response(request)


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` on every record ("-" outside a request), for any formatter."""

    def filter(self, record):
        if not hasattr(record, "request_id"):
            # django.request logs a 4xx/5xx response after the middleware returned it, so
            # outside the request's context; the record carries the request itself.
            request = getattr(record, "request", None)
            record.request_id = current_request_id() or getattr(request, "request_id", None) or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (LOG_FORMAT=json)."""

    def format(self, record):
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        status = getattr(record, "status_code", None)
        if status is not None:
            entry["status"] = status
        request = getattr(record, "request", None)
        if request is not None and hasattr(request, "method"):
            entry["method"] = request.method
            entry["path"] = request.path
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
