"""``SESSION_ENGINE = "accounts.sessions"``: Django's database sessions, keyed by a digest.

The browser's cookie holds the session key; the ``hashed_sessions`` table holds only its
SHA-256 (:class:`accounts.models.HashedSession`). Everything else is Django's database
store: ``clearsessions``, ``cycle_key()`` on sign-in and on a password change
(``update_session_auth_hash``), ``flush()`` on sign-out.
"""

from __future__ import annotations

from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from agentforge_core.crypto import sha256_hex


def key_digest(session_key: str) -> str:
    return sha256_hex(session_key)


class SessionStore(DatabaseSessionStore):
    @classmethod
    def get_model_class(cls):
        from accounts.models import HashedSession

        return HashedSession

    def _get_session_from_db(self):
        session = (
            self.model.objects.filter(session_key=key_digest(self.session_key), expire_date__gt=timezone.now()).first()
            if self.session_key
            else None
        )
        if session is None:
            self._session_key = None
        return session

    async def _aget_session_from_db(self):
        session = (
            await self.model.objects.filter(
                session_key=key_digest(self.session_key), expire_date__gt=timezone.now()
            ).afirst()
            if self.session_key
            else None
        )
        if session is None:
            self._session_key = None
        return session

    def exists(self, session_key):
        return self.model.objects.filter(session_key=key_digest(session_key)).exists()

    async def aexists(self, session_key):
        return await self.model.objects.filter(session_key=key_digest(session_key)).aexists()

    def create_model_instance(self, data):
        return self.model(
            session_key=key_digest(self._get_or_create_session_key()),
            session_data=self.encode(data),
            expire_date=self.get_expiry_date(),
        )

    async def acreate_model_instance(self, data):
        return self.model(
            session_key=key_digest(await self._aget_or_create_session_key()),
            session_data=self.encode(data),
            expire_date=await self.aget_expiry_date(),
        )

    # Django's store turns *any* database error of an update into UpdateError, which the
    # session middleware answers with 400 ("the session was deleted"). A database that stopped
    # answering between the view and the session save is no fault of the client: it stays an
    # OperationalError, answered 503 with Retry-After like every other request of the outage.
    def save(self, must_create=False):
        try:
            return super().save(must_create)
        except UpdateError as exc:
            raise _database_error(exc) from None

    async def asave(self, must_create=False):
        try:
            return await super().asave(must_create)
        except UpdateError as exc:
            raise _database_error(exc) from None

    def delete(self, session_key=None):
        session_key = session_key or self.session_key
        if session_key is not None:
            self.model.objects.filter(session_key=key_digest(session_key)).delete()

    async def adelete(self, session_key=None):
        session_key = session_key or self.session_key
        if session_key is not None:
            await self.model.objects.filter(session_key=key_digest(session_key)).adelete()


def _database_error(update_error: UpdateError) -> Exception:
    cause = update_error.__context__
    return cause if isinstance(cause, (OperationalError, InterfaceError)) else update_error
