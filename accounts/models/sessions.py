from __future__ import annotations

from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import models


class HashedSession(AbstractBaseSession):
    """An admin (cookie) session whose key is stored only as the SHA-256 of the cookie value.

    A key read from this table, a backup or a replica is not a cookie that signs in: the
    store (``accounts.sessions``) hashes whatever the browser sends before looking it up.
    """

    session_key = models.CharField("session key digest", max_length=64, primary_key=True)

    class Meta(AbstractBaseSession.Meta):
        db_table = "hashed_sessions"
        verbose_name = "session"

    @classmethod
    def get_session_store_class(cls):
        from accounts.sessions import SessionStore

        return SessionStore
