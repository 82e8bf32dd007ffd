import contextlib
import itertools
import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

_counter = itertools.count(1)


def pytest_collection_modifyitems(config, items):
    # scripts/test names the one backend whose run takes the tests marked "once" (they do not
    # depend on the backend); a plain pytest run takes them all.
    once = os.environ.get("TEST_ONCE_BACKEND")
    for item in items:
        marker = item.get_closest_marker("backends")
        if marker and settings.DB_TYPE not in marker.args:
            item.add_marker(
                pytest.mark.skip(reason=f"runs on {', '.join(marker.args)} only (DB_TYPE={settings.DB_TYPE})")
            )
        elif once and once != settings.DB_TYPE and item.get_closest_marker("once"):
            item.add_marker(pytest.mark.skip(reason=f"does not depend on the backend: runs with DB_TYPE={once}"))


def _postgresql_connections():
    from django.db import connections

    return [connections[alias] for alias in connections if connections[alias].vendor == "postgresql"]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """PostgreSQL: the test database is created and migrated by the owner role (DB_MIGRATION_USER)."""
    from accounts import rls

    for connection in _postgresql_connections():
        rls.use_owner_role(connection)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """PostgreSQL: then every test runs as the application role, under row-level security.

    Django's flush between transactional tests runs as the owner (the flush command does,
    like migrate); the owner drops the database at the end.
    """
    from accounts import rls

    with django_db_blocker.unblock():
        for connection in _postgresql_connections():
            rls.use_app_role(connection)
    yield
    with django_db_blocker.unblock():
        for connection in _postgresql_connections():
            rls.use_owner_role(connection)
    from django.db import connections

    for alias in connections:  # import_json's lock file beside a SQLite test database
        if connections[alias].vendor == "sqlite":
            with contextlib.suppress(OSError):
                os.unlink(str(connections[alias].settings_dict["NAME"]) + ".import-lock")


@pytest.fixture
def make_org(db):
    """Create an organization: make_org("Acme")."""
    from accounts.models import Organization

    def make(name=None, **fields):
        n = next(_counter)
        name = name or f"Org {n}"
        return Organization.all_orgs.create(name=name, slug=fields.pop("slug", f"org-{n}"), **fields)

    return make


@pytest.fixture
def make_user(db):
    """Create a user in an organization; password=None gives an unusable one (fast)."""
    from accounts.models import User

    def make(org, email=None, password=None, **fields):
        email = email or f"user{next(_counter)}@example.com"
        return User.all_orgs.create_user(email=email, password=password, org=org, **fields)

    return make


# --- the parallel-run store: the real sample in a scratch data directory --------------------

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample-data"


@pytest.fixture
def data_dir(tmp_path):
    target = tmp_path / "data"
    shutil.copytree(SAMPLE_DIR, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@pytest.fixture
def default_org(db):
    from accounts.models import Organization

    return Organization.get_default()


@pytest.fixture
def imported(data_dir, default_org):
    """The real sample imported with import_json, as at the start of the parallel run."""
    call_command("import_json", str(data_dir), verbosity=0)
    return data_dir


@pytest.fixture(autouse=True)
def _empty_cache():
    """Each test starts with an empty cache (cached reads, throttles, shared counters)."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def unreachable_alias(db):
    """A second connection alias to the running backend with a closed port (or, on SQLite, a
    missing directory): every query on it fails as a database that stopped answering does."""
    from django.db import connection, connections

    dead = connections.create_connection("default")
    dead.settings_dict = dict(connection.settings_dict)
    if connection.vendor == "sqlite":
        dead.settings_dict["NAME"] = "/nonexistent-agentforge-dir/x/db.sqlite3"
    else:
        dead.settings_dict["PORT"] = "1"
    options = dead.settings_dict["OPTIONS"] = dict(dead.settings_dict.get("OPTIONS", {}))
    if isinstance(options.get("pool"), dict):  # psycopg's pool would wait its full timeout (30 s)
        options["pool"] = {**options["pool"], "timeout": 2}
    dead.alias = "unreachable"
    connections["unreachable"] = dead
    try:
        yield "unreachable"
    finally:
        dead.close()
        del connections["unreachable"]


@contextlib.contextmanager
def shared_rows():
    """A transaction around a module-scoped fixture's rows and the tests that use them.

    Each test's own transaction (pytest-django's ``db``) becomes a savepoint inside it and is
    rolled back after the test, so the rows are built once and every test still starts from
    them as they were; at the end everything is rolled back. The rows stay for the rest of the
    module: a test that does not ask for them sees them too. A module using it holds no
    ``transactional_db`` test: pytest-django runs those after the others, while the module's
    transaction would still be open."""
    from django.db import transaction

    atomic = transaction.atomic()
    atomic.__enter__()
    try:
        yield
    finally:
        transaction.set_rollback(True)
        atomic.__exit__(None, None, None)


# --- tenancy attacks (tests/test_tenancy_attacks*.py) --------------------------------------


@pytest.fixture
def two(make_org, make_user):
    """A and B, each with a member and a row of every model (B's names and secrets end in ``-g``)."""
    from tests.admin_support import populate

    a, b = make_org("A"), make_org("B")
    mine = populate(a, make_user(a, email="member@a.test"))
    theirs = populate(b, make_user(b, email="member@b.test"), suffix="-g")
    return a, b, mine, theirs


def update_around_the_keys(model, pk, values):
    """``UPDATE`` a row past the composite tenant keys, as a bug or an old writer could."""
    from django.db import connection

    # MariaDB checks the composite tenant keys at each statement; PostgreSQL at COMMIT,
    # which a test never reaches (the link is taken back before Django's end-of-test check).
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        try:
            model.all_orgs.filter(pk=pk).update(**values)
        finally:
            if connection.vendor == "mysql":
                cursor.execute("SET FOREIGN_KEY_CHECKS = 1")


@pytest.fixture
def plant():
    """Store a cross-organization link the way a bug or an old writer would: around the ORM's
    checks and the database's composite keys; taken back at the end of the test."""
    planted = []

    def plant(model, row, **links):
        planted.append((model, row.pk, model.all_orgs.filter(pk=row.pk).values(*links).get()))
        update_around_the_keys(model, row.pk, links)

    yield plant
    for model, pk, before in reversed(planted):
        update_around_the_keys(model, pk, before)


# --- read replicas (tests/test_replicas.py, tests/test_attacks_wave4_surfaces.py) ----------


@pytest.fixture
def routed(monkeypatch):
    """A replica reported healthy that does not exist ("replica1" is not in this run's
    DATABASES): a read routed there raises ConnectionDoesNotExist, so a query that answers
    went to the primary."""
    from django.test import override_settings

    from agentforge_site import replicas

    monkeypatch.setattr(replicas.monitor, "healthy", lambda: ["replica1"])
    token = replicas.new_read_state()
    with override_settings(
        DATABASE_REPLICAS=["replica1"],
        DATABASE_ROUTERS=["agentforge_site.replicas.ReplicaRouter"],
        DB_REPLICA_STICKY_SECONDS=30.0,
    ):
        yield
    replicas.end_read_state(token)


# --- caching (tests/test_caching.py, tests/test_attacks_wave4_surfaces.py) ------------------


@pytest.fixture(params=["locmem", "redis"])
def cache_backend(request):
    """The default cache as locmem and as the real Redis on this machine, emptied."""
    from django.test import override_settings

    from agentforge_site import caching
    from tests.test_caching import REDIS_TEST_URL, caches_for, clear_own_keys

    url = "locmem://tests" if request.param == "locmem" else REDIS_TEST_URL
    with override_settings(CACHES=caches_for(url)):
        clear_own_keys()
        caching.status.down_since = None
        yield request.param
        clear_own_keys()
