"""Organization scoping: automatic filtering by organization, failing closed.

The active organization lives in a ContextVar, so it follows the current thread and
asyncio task (and Django's async ORM, whose sync_to_async copies the context). Scoped
managers read it on every query; no active organization means OrgScopeError, never
"all rows". System work (import, maintenance, superuser admin) uses ``Model.all_orgs``
or runs inside :func:`unscoped`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import uuid
from contextlib import ContextDecorator

from django.apps import apps
from django.core.exceptions import PermissionDenied, SynchronousOnlyOperation


class OrgScopeError(PermissionDenied):
    """A tenant query or write without an active organization, or across organizations."""


class _AllOrganizations:
    """Sentinel for an explicit, deliberate unscoped block."""

    def __repr__(self):
        return "<all organizations>"


ALL_ORGS = _AllOrganizations()

_active_org: contextvars.ContextVar = contextvars.ContextVar("agentforge_active_org", default=None)
# The scopes open in this context, innermost last: an exit out of that order (a generator that
# yields inside its scope and is closed after its caller's block) is caught, see _Scope.__exit__.
_open_scopes: contextvars.ContextVar = contextvars.ContextVar("agentforge_open_scopes", default=())


def _resolve(org) -> uuid.UUID:
    """Accept an Organization, its UUID (object or string) or its legacy id ("org_default")."""
    Organization = apps.get_model("accounts", "Organization")  # by label: accounts builds on this module
    if isinstance(org, Organization):
        # UUID primary keys are set on construction: "unsaved" is _state.adding.
        if org.pk is None or org._state.adding:
            raise OrgScopeError("cannot scope to an unsaved organization")
        return org.pk if isinstance(org.pk, uuid.UUID) else uuid.UUID(str(org.pk))
    if isinstance(org, uuid.UUID):
        return org
    if isinstance(org, str) and org:
        try:
            return uuid.UUID(org)
        except ValueError:
            try:
                pk = Organization.all_orgs.filter(legacy_id=org).values_list("pk", flat=True).first()
            except SynchronousOnlyOperation as exc:
                raise OrgScopeError(
                    f"org_scope({org!r}) looks the legacy id up in the database: in async code "
                    "use `async with org_scope(...)`, or pass the organization or its UUID"
                ) from exc
            if pk is None:
                raise OrgScopeError(f"no organization with id {org!r}") from None
            return pk
    raise OrgScopeError(f"not an organization: {org!r}")


async def _aresolve(org) -> uuid.UUID:
    """:func:`_resolve` for async code: a legacy id is looked up through sync_to_async."""
    if isinstance(org, str) and org:
        try:
            return uuid.UUID(org)
        except ValueError:
            from asgiref.sync import sync_to_async

            return await sync_to_async(_resolve)(org)
    return _resolve(org)


def current_org():
    """The active organization's id (UUID), or None when none is active.

    Inside :func:`unscoped` this returns ``ALL_ORGS``.
    """
    return _active_org.get()


def current_org_id() -> uuid.UUID:
    """The active organization's id; raise OrgScopeError when none is active."""
    value = _active_org.get()
    if value is None or value is ALL_ORGS:
        raise OrgScopeError("no organization is active: wrap the code in org_scope(org)")
    return value


class _Scope(ContextDecorator):
    """``with``, ``async with``, and a decorator for sync and async functions."""

    def __init__(self, value_factory, async_value_factory=None):
        self._value_factory = value_factory
        self._async_value_factory = async_value_factory
        self._tokens: list = []

    def _open(self, value):
        entry = object()
        self._tokens.append((_active_org.set(value), entry))
        _open_scopes.set((*_open_scopes.get(), entry))
        return value

    def __enter__(self):
        return self._open(self._value_factory())

    def __exit__(self, *exc):
        token, entry = self._tokens.pop()
        open_scopes = _open_scopes.get()
        if open_scopes and open_scopes[-1] is entry:
            _open_scopes.set(open_scopes[:-1])
            _active_org.reset(token)
            return False
        # Out of order: a generator yielded inside its own scope, and the caller's code ran in
        # it (and left the block) meanwhile. Resetting in the order of exits would leave an
        # organization active after every block has closed (the caller's exit restores "none",
        # the generator's closing then restores the caller's organization): fail closed instead.
        if entry in open_scopes:
            # The caller's block ends with a scope opened inside it still open: close both.
            _open_scopes.set(open_scopes[: open_scopes.index(entry)])
            _active_org.reset(token)
            raise OrgScopeError(
                "a scope opened inside this block is still open (a generator suspended inside "
                "org_scope/unscoped?): it has been closed with this block"
            )
        return False  # already closed with the block it was opened in: restore nothing

    async def __aenter__(self):
        if self._async_value_factory is not None:
            value = await self._async_value_factory()
        else:
            value = self._value_factory()
        # __aenter__ runs in the awaiting task's context, so the body sees the value.
        return self._open(value)

    async def __aexit__(self, *exc):
        return self.__exit__(*exc)

    def _recreate_cm(self):
        # A fresh object per call keeps a decorated function safe across threads.
        return _Scope(self._value_factory, self._async_value_factory)

    def __call__(self, func):
        # ContextDecorator does not cover coroutine functions: the scope must be held
        # while the coroutine runs, not while it is created.
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_inner(*args, **kwargs):
                async with self._recreate_cm():
                    return await func(*args, **kwargs)

            return async_inner
        return super().__call__(func)


def org_scope(org) -> _Scope:
    """Activate ``org`` (object, UUID or legacy id) for the block or decorated function.

    In async code, ``async with org_scope("org_default")`` looks a legacy id up without
    blocking the event loop; an Organization or a UUID works with a plain ``with`` too.
    """
    return _Scope(lambda: _resolve(org), lambda: _aresolve(org))


def unscoped() -> _Scope:
    """Deliberately lift scoping for system work (import, maintenance commands)."""
    return _Scope(lambda: ALL_ORGS)


def resolve_org(org) -> uuid.UUID:
    """The id of an Organization given as itself, its UUID or its legacy id; OrgScopeError when
    a legacy id names none. The one reading of an organization argument (``org_scope``, ``--org``)."""
    return _resolve(org)
