from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from agentforge_core.tenancy import _Scope


def _org_id_of(user):
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return getattr(user, "org_id", None)


class OrganizationScopeMiddleware:
    """Activate the signed-in user's organization for the whole request (sync and async views).

    Anonymous requests run with no organization active, so tenant queries fail closed.
    Must come after django.contrib.auth's AuthenticationMiddleware. The scope covers
    the view and the rendering of a normal response; a streaming response's iterator
    runs after the middleware returns, so it must open its own org_scope.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        org_id = _org_id_of(getattr(request, "user", None))
        if org_id is None:
            return self.get_response(request)
        request.org_id = org_id
        with _Scope(lambda: org_id):
            return self.get_response(request)

    async def __acall__(self, request):
        # request.user is a lazy object that would query the database synchronously;
        # auser() (set by AuthenticationMiddleware) loads the user the async way.
        auser = getattr(request, "auser", None)
        user = await auser() if auser is not None else getattr(request, "user", None)
        org_id = _org_id_of(user)
        if org_id is None:
            return await self.get_response(request)
        request.org_id = org_id
        with _Scope(lambda: org_id):
            return await self.get_response(request)
