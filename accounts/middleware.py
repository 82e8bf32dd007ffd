from __future__ import annotations

from accounts.tenancy import _Scope


class OrganizationScopeMiddleware:
    """Activate the signed-in user's organization for the whole request (sync and async views)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        org_id = getattr(user, "org_id", None) if user is not None and user.is_authenticated else None
        if org_id is None:
            return self.get_response(request)
        request.org_id = org_id
        with _Scope(lambda: org_id):
            return self.get_response(request)
