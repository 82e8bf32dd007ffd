"""Admin sessions: the table keeps only the SHA-256 of each cookie, so a key read from it signs nobody in."""

from __future__ import annotations

import datetime as dt
import importlib
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.models import HashedSession
from accounts.sessions import SessionStore
from agentforge_core.crypto import sha256_hex

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a different long passphrase 42"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_hashes(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff(make_org, make_user):
    return make_user(make_org("Acme"), email="admin@acme.test", password=PASSWORD, is_staff=True, is_superuser=True)


def signed_in_client(email="admin@acme.test", password=PASSWORD) -> Client:
    client = Client()
    response = client.post("/admin/login/", {"username": email, "password": password})
    assert response.status_code == 302
    return client


def cookie_of(client) -> str:
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def stored_keys() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT session_key FROM hashed_sessions")
        return [row[0] for row in cursor.fetchall()]


def test_sessions_use_the_hashed_store():
    assert settings.SESSION_ENGINE == "accounts.sessions"
    assert HashedSession.get_session_store_class() is SessionStore


def test_the_table_holds_the_digest_of_the_cookie_and_never_the_cookie(staff):
    client = signed_in_client()
    cookie = cookie_of(client)
    assert stored_keys() == [sha256_hex(cookie)]
    assert Session.objects.count() == 0  # nothing in Django's own table either


def test_a_key_read_from_the_database_does_not_sign_in(staff):
    client = signed_in_client()
    assert client.get("/admin/").status_code == 200
    (stolen,) = stored_keys()
    thief = Client()
    thief.cookies[settings.SESSION_COOKIE_NAME] = stolen
    response = thief.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert SessionStore(stolen).load() == {}
    assert client.get("/admin/").status_code == 200  # the real cookie still works


def test_signing_out_deletes_the_row(staff):
    client = signed_in_client()
    client.post("/admin/logout/")
    assert stored_keys() == []


def test_a_password_change_in_the_admin_renews_the_key_and_ends_the_other_sessions(staff):
    client = signed_in_client()
    elsewhere = signed_in_client()
    old_cookie = cookie_of(client)
    response = client.post(
        "/admin/password_change/",
        {
            "old_password": PASSWORD,
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        },
    )
    assert response.status_code == 302
    assert cookie_of(client) != old_cookie
    assert sha256_hex(old_cookie) not in stored_keys() and sha256_hex(cookie_of(client)) in stored_keys()
    assert client.get("/admin/").status_code == 200
    assert elsewhere.get("/admin/").status_code == 302
    replay = Client()
    replay.cookies[settings.SESSION_COOKIE_NAME] = old_cookie
    assert replay.get("/admin/").status_code == 302


def test_clearsessions_removes_expired_sessions_only():
    live, expired = SessionStore(), SessionStore()
    live["n"], expired["n"] = 1, 2
    live.save()
    expired.save()
    HashedSession.objects.filter(session_key=sha256_hex(expired.session_key)).update(
        expire_date=timezone.now() - dt.timedelta(seconds=1)
    )
    call_command("clearsessions")
    assert stored_keys() == [sha256_hex(live.session_key)]
    assert SessionStore(live.session_key).load() == {"n": 1}
    assert SessionStore(expired.session_key).load() == {}


def test_exists_and_delete_take_the_cookie_value():
    store = SessionStore()
    store["n"] = 1
    store.save()
    key = store.session_key
    assert store.exists(key) and not store.exists(sha256_hex(key))
    store.delete(sha256_hex(key))
    assert stored_keys() == [sha256_hex(key)]
    store.delete(key)
    assert stored_keys() == []


@pytest.mark.django_db(transaction=True)
def test_the_async_methods_hash_the_key_too():
    from asgiref.sync import async_to_sync

    store = SessionStore()
    store["n"] = 1
    async_to_sync(store.asave)()
    assert stored_keys() == [sha256_hex(store.session_key)]
    assert async_to_sync(SessionStore(store.session_key).aload)() == {"n": 1}
    assert async_to_sync(store.aexists)(store.session_key)
    async_to_sync(store.adelete)()
    assert stored_keys() == []


def test_the_migration_drops_the_cleartext_sessions():
    Session.objects.create(session_key="k" * 32, session_data="x", expire_date=timezone.now() + dt.timedelta(days=1))
    migration = importlib.import_module("accounts.migrations.0003_hashed_sessions")
    migration.drop_cleartext_sessions(apps, SimpleNamespace(connection=connection))
    assert Session.objects.count() == 0


class _SessionsTo:
    """A database router that sends the session table to another connection alias."""

    def __init__(self, alias):
        self.alias = alias

    def db_for_write(self, model, **hints):
        return self.alias if model is HashedSession else None

    db_for_read = db_for_write


def test_a_database_gone_at_the_session_save_is_an_outage_not_a_deleted_session(unreachable_alias, settings):
    """Django turns any database error of a session update into UpdateError, answered 400
    "session deleted"; a database that stopped answering must stay OperationalError (503)."""
    from django.contrib.sessions.backends.base import UpdateError
    from django.db import OperationalError

    store = SessionStore()
    store["n"] = 1
    store.save(must_create=True)
    store["n"] = 2
    settings.DATABASE_ROUTERS = [_SessionsTo(unreachable_alias)]
    with pytest.raises(OperationalError):
        store.save()
    settings.DATABASE_ROUTERS = []
    # A row that really is gone is still Django's UpdateError.
    HashedSession.objects.all().delete()
    with pytest.raises(UpdateError):
        store.save()
