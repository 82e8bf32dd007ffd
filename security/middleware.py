"""Who, where and how for every audit entry written during a request."""

from __future__ import annotations

import ipaddress
from contextvars import ContextVar

from auditlog.middleware import AuditlogMiddleware
from django.conf import settings
from django.http import HttpResponseBadRequest

_request_context: ContextVar = ContextVar("agentforge_request_context", default=None)


def request_context() -> dict:
    """IP, user agent, path, method and session of the current request ({} outside one)."""
    return _request_context.get() or {}


def _in_networks(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for network in networks:
        try:
            if ip in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue
    return False


def from_trusted_proxy(request) -> bool:
    """Whether the request's peer is one of TRUSTED_PROXIES (whose headers are believed)."""
    return _in_networks(request.META.get("REMOTE_ADDR") or "", getattr(settings, "TRUSTED_PROXIES", []))


def client_ip(request) -> str | None:
    """The client address; X-Forwarded-For is believed only from TRUSTED_PROXIES.

    Walk the forwarded chain from the right, skipping trusted proxies, and take the
    first address that is not one: that is the last hop a trusted proxy saw.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    proxies = getattr(settings, "TRUSTED_PROXIES", [])
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if not remote or not forwarded or not _in_networks(remote, proxies):
        return remote
    for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
        if hop.startswith("[") and "]" in hop:
            hop = hop[1 : hop.index("]")]
        elif hop.count(":") == 1:
            hop = hop.split(":")[0]
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return remote
        if not _in_networks(hop, proxies):
            return hop
    return remote


class AuditContextMiddleware(AuditlogMiddleware):
    """django-auditlog's middleware, with the user agent and a proxy-aware client IP."""

    @staticmethod
    def _get_remote_addr(request):
        return client_ip(request)

    @staticmethod
    def _get_remote_port(request):
        # auditlog believes X-Forwarded-Port from anyone; only a trusted proxy may set it.
        if not from_trusted_proxy(request):
            return None
        return AuditlogMiddleware._get_remote_port(request)

    def __call__(self, request):
        session = getattr(request, "session", None)
        context = {
            "ip_address": client_ip(request),
            "user_agent": request.META.get("HTTP_USER_AGENT", ""),
            "request_path": request.path,
            "request_method": request.method,
            "session_key": getattr(session, "session_key", None),
            # Set by operations.requestlog.RequestIdMiddleware (a proxy's id only when trusted).
            "request_id": getattr(request, "request_id", None),
        }
        token = _request_context.set(context)
        try:
            return super().__call__(request)
        finally:
            _request_context.reset(token)


class RejectNulMiddleware:
    """400 for a NUL character in the path or a query parameter (admin filters, searches,
    autocompletes): PostgreSQL text cannot hold one, so the query would fail with a 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or any(
            "\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists()
        ):
            return HttpResponseBadRequest("NUL character in the request", content_type="text/plain")
        return self.get_response(request)
