"""Read replicas without a replica server: configuration, routing decisions, read-your-writes.

The streaming-replica behaviour (lag, a stopped replica, nothing written to it) is in
test_replicas_streaming.py, which needs scripts/start-replica.
"""

import asyncio
import time
from pathlib import Path

import pytest
from django.db import router, transaction
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.connection import ConnectionDoesNotExist

from agentforge_agents.models import Agent
from agentforge_site import replicas
from agentforge_site.dbconfig import ConfigurationError, build_database, build_replicas, replica_settings
from tests.test_settings import GOOD, _manage

BASE = Path(__file__).resolve().parent.parent
PG = {
    "DB_TYPE": "postgresql",
    "DB_HOST": "primary.example.com",
    "DB_PORT": "5433",
    "DB_NAME": "agentforge",
    "DB_USER": "af",
    "DB_PASSWORD": "s3cret",
    "DB_POOL_SIZE": "3",
    "DB_SSL_MODE": "require",
}


def _replicas(env):
    return build_replicas(env, BASE, build_database(env, BASE))


# --- configuration --------------------------------------------------------------------------


def test_no_replicas_configured_means_no_aliases():
    assert _replicas(PG) == {}
    assert replica_settings(PG, {})["DATABASE_REPLICAS"] == []


def test_replica_hosts_share_the_primary_settings_built_by_the_same_code():
    primary = build_database(PG, BASE)
    found = _replicas(dict(PG, DB_REPLICA_HOSTS="r1.example.com, r2.example.com:6543,[fd00::7]:6000"))
    assert list(found) == ["replica1", "replica2", "replica3"]
    assert [(r["HOST"], r["PORT"]) for r in found.values()] == [
        ("r1.example.com", "5433"),
        ("r2.example.com", "6543"),
        ("fd00::7", "6000"),
    ]
    for replica in found.values():
        # Everything but the address is the primary's: pool, SSL, application name, health checks.
        same = {k: v for k, v in replica.items() if k not in ("HOST", "PORT", "TEST")}
        assert same == {k: v for k, v in primary.items() if k not in ("HOST", "PORT", "TEST")}
        assert replica["TEST"] == {"MIRROR": "default"}


def test_replica_overrides_and_urls():
    env = dict(
        PG,
        DB_REPLICA_HOSTS="r1",
        DB_REPLICA_USER="reader",
        DB_REPLICA_PASSWORD="ro",
        DB_REPLICA_NAME="af_ro",
        DB_REPLICA_PORT="7000",
        DB_REPLICA_SSL_MODE="verify-full",
    )
    (replica,) = _replicas(env).values()
    assert (replica["HOST"], replica["PORT"], replica["NAME"], replica["USER"], replica["PASSWORD"]) == (
        "r1",
        "7000",
        "af_ro",
        "reader",
        "ro",
    )
    assert replica["OPTIONS"]["sslmode"] == "verify-full"

    urls = _replicas(dict(PG, DATABASE_REPLICA_URLS="postgres://ro:pw@r9:6000/other,postgresql://r8"))
    assert [(r["HOST"], r["PORT"], r["NAME"], r["USER"], r["PASSWORD"]) for r in urls.values()] == [
        ("r9", "6000", "other", "ro", "pw"),
        ("r8", "5433", "agentforge", "af", "s3cret"),
    ]


def test_a_primary_from_database_url_gives_its_fields_to_host_replicas():
    env = {"DATABASE_URL": "postgres://app:pw@main:5544/prod", "DB_REPLICA_HOSTS": "r1"}
    (replica,) = _replicas(env).values()
    assert (replica["HOST"], replica["PORT"], replica["NAME"], replica["USER"], replica["PASSWORD"]) == (
        "r1",
        "5544",
        "prod",
        "app",
        "pw",
    )


@pytest.mark.parametrize(
    "env, variable, text",
    [
        (dict(PG, DB_REPLICA_HOSTS="r1", DATABASE_REPLICA_URLS="postgres://r2/x"), "DATABASE_REPLICA_URLS", "not both"),
        ({"DB_TYPE": "sqlite", "DB_REPLICA_HOSTS": "r1"}, "DB_REPLICA_HOSTS", "PostgreSQL primary (DB_TYPE=sqlite)"),
        (dict(PG, DB_TYPE="mysql", DB_REPLICA_HOSTS="r1"), "DB_REPLICA_HOSTS", "(DB_TYPE=mysql)"),
        (dict(PG, DB_REPLICA_HOSTS="r1:port"), "DB_REPLICA_HOSTS", "expected host or host:port, got 'r1:port'"),
        (dict(PG, DB_REPLICA_HOSTS=":5432"), "DB_REPLICA_HOSTS", "expected host or host:port"),
        (dict(PG, DATABASE_REPLICA_URLS="mysql://r1/x"), "DATABASE_REPLICA_URLS", "must be postgres://"),
        (dict(PG, DATABASE_REPLICA_URLS="postgres://r1:99999999/x"), "DATABASE_REPLICA_URLS", "bad port"),
        (
            dict(PG, DB_REPLICA_HOSTS="r1", DB_REPLICA_SSL_MODE="sometimes"),
            "DB_REPLICA_HOSTS",
            "replica 'r1': DB_SSL_MODE",
        ),
        (
            dict(PG, DATABASE_REPLICA_URLS="postgres://ro:secretpw@r1:5432/x", DB_REPLICA_SSL_MODE="sometimes"),
            "DATABASE_REPLICA_URLS",
            "replica 'postgres://r1:5432/x': DB_SSL_MODE: unknown value 'sometimes'",
        ),
    ],
)
def test_bad_replica_configuration_names_the_variable(env, variable, text):
    with pytest.raises(ConfigurationError) as excinfo:
        _replicas(env)
    assert excinfo.value.variable == variable
    assert str(excinfo.value).startswith(f"{variable}: ") and text in str(excinfo.value)
    assert "secretpw" not in str(excinfo.value) and "s3cret" not in str(excinfo.value)


def test_read_your_writes_time_covers_the_lag_limit_and_the_check_interval():
    values = replica_settings({"DB_REPLICA_MAX_LAG": "4", "DB_REPLICA_CHECK_INTERVAL": "0.5"}, {"replica1": {}})
    assert values == {
        "DATABASE_REPLICAS": ["replica1"],
        "DB_REPLICA_MAX_LAG": 4.0,
        "DB_REPLICA_CHECK_INTERVAL": 0.5,
        "DB_REPLICA_STICKY_SECONDS": 4.5,
    }
    with pytest.raises(ConfigurationError) as excinfo:
        replica_settings({"DB_REPLICA_MAX_LAG": "4", "DB_REPLICA_STICKY_SECONDS": "3"}, {})
    assert str(excinfo.value) == (
        "DB_REPLICA_STICKY_SECONDS: must be at least DB_REPLICA_MAX_LAG + DB_REPLICA_CHECK_INTERVAL = 6, got 3"
    )
    with pytest.raises(ConfigurationError, match="^DB_REPLICA_MAX_LAG: expected a number of seconds, got 'soon'$"):
        replica_settings({"DB_REPLICA_MAX_LAG": "soon"}, {})
    with pytest.raises(ConfigurationError, match="^DB_REPLICA_CHECK_INTERVAL: must be at least 0.05"):
        replica_settings({"DB_REPLICA_CHECK_INTERVAL": "0"}, {})


def test_settings_install_the_router_and_middleware_only_with_replicas():
    show = (
        "from django.conf import settings; print(settings.DATABASE_ROUTERS, sorted(settings.DATABASES), "
        "[m for m in settings.MIDDLEWARE if 'replicas' in m or 'sessions' in m])"
    )
    base = dict(GOOD, DB_TYPE="postgresql", DB_HOST="h", DB_NAME="n", DB_USER="u")
    plain = _manage(base, "shell", "-c", show)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip().splitlines()[-1] == (
        "[] ['default'] ['django.contrib.sessions.middleware.SessionMiddleware']"
    )
    routed = _manage(dict(base, DB_REPLICA_HOSTS="r1,r2"), "shell", "-c", show)
    assert routed.returncode == 0, routed.stderr
    assert routed.stdout.strip().splitlines()[-1] == (
        "['agentforge_site.replicas.ReplicaRouter'] ['default', 'replica1', 'replica2'] "
        "['agentforge_site.replicas.ReadYourWritesMiddleware', 'django.contrib.sessions.middleware.SessionMiddleware']"
    )


def test_bad_replica_setting_stops_startup_with_one_line():
    result = _manage(
        dict(
            GOOD,
            DB_TYPE="postgresql",
            DB_HOST="h",
            DB_NAME="n",
            DB_USER="u",
            DB_REPLICA_HOSTS="r1",
            DB_REPLICA_MAX_LAG="-1",
        ),
        "check",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration error: DB_REPLICA_MAX_LAG: must be at least 0, got -1"


# --- routing decisions (a replica that is reported healthy but does not exist) ----------------
#
# "replica1" is not in this test run's DATABASES: a read routed there raises
# ConnectionDoesNotExist, so a query that succeeds proves it went to the primary.


def test_reads_go_to_a_healthy_replica_and_writes_to_the_primary(routed):
    assert router.db_for_read(Agent) == "replica1"
    assert router.db_for_write(Agent) == "default"
    assert router.allow_migrate("default", "agents") is True
    assert router.allow_migrate("replica1", "agents") is False


def test_a_write_pins_the_context_to_the_primary_for_the_sticky_time(routed, monkeypatch):
    router.db_for_write(Agent)
    assert router.db_for_read(Agent) == "default"
    later = time.time() + 31
    monkeypatch.setattr(replicas.time, "time", lambda: later)
    assert router.db_for_read(Agent) == "replica1"


def test_no_healthy_replica_means_the_primary(routed, monkeypatch):
    monkeypatch.setattr(replicas.monitor, "healthy", lambda: [])
    assert router.db_for_read(Agent) == "default"


@pytest.mark.django_db(transaction=True)  # not inside the test's own atomic block
def test_reads_inside_atomic_and_primary_only_use_the_primary(routed):
    with transaction.atomic():
        assert router.db_for_read(Agent) == "default"
    with replicas.primary_only():
        with replicas.primary_only():
            assert router.db_for_read(Agent) == "default"
        assert router.db_for_read(Agent) == "default"
    assert router.db_for_read(Agent) == "replica1"


@pytest.mark.django_db(transaction=True)
def test_export_json_reads_the_primary(routed, tmp_path, make_org):
    from legacy.migration.exporter import export_directory

    with replicas.primary_only():
        make_org("Exported")
    token = replicas.new_read_state()  # another request: not pinned by the write above
    try:
        with pytest.raises(ConnectionDoesNotExist):  # a plain read would go to the replica
            Agent.all_orgs.count()
        counts = export_directory(tmp_path)
    finally:
        replicas.end_read_state(token)
    assert '"Exported"' in (tmp_path / "security" / "organizations.json").read_text()
    assert counts["security/organizations.json"] == 1


@pytest.mark.django_db(transaction=True)
def test_verify_parity_reads_the_primary(routed, tmp_path, make_org):
    from legacy.store.parity import Parity

    with replicas.primary_only():
        make_org("Compared")
    token = replicas.new_read_state()
    try:
        with pytest.raises(ConnectionDoesNotExist):
            Agent.all_orgs.count()
        side = Parity(tmp_path).db_side("security/organizations")
    finally:
        replicas.end_read_state(token)
    assert [record["name"] for record in side.values()] == ["Compared"]


def test_marker_pins_until_the_write_is_sticky_seconds_old(routed, monkeypatch):
    assert replicas.write_marker() is None  # nothing written yet
    router.db_for_write(Agent)
    marker = replicas.write_marker()
    written = time.time()

    token = replicas.new_read_state()  # the client's next request, elsewhere
    try:
        assert router.db_for_read(Agent) == "replica1"
        assert replicas.follow_marker(marker) is True
        assert router.db_for_read(Agent) == "default"
    finally:
        replicas.end_read_state(token)

    for forged in (
        "",
        "garbage",
        marker.replace(marker.rsplit(":", 1)[1], "AAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        replicas._signer().sign(repr(written + 3600))[:-1] + "x",
    ):
        token = replicas.new_read_state()
        try:
            assert replicas.follow_marker(forged) is False
            assert router.db_for_read(Agent) == "replica1"
        finally:
            replicas.end_read_state(token)

    monkeypatch.setattr(replicas.time, "time", lambda: written + 31)
    token = replicas.new_read_state()
    try:
        assert replicas.follow_marker(marker) is False  # expired
        assert router.db_for_read(Agent) == "replica1"
    finally:
        replicas.end_read_state(token)


def test_a_signed_future_write_time_pins_no_longer_than_sticky_seconds(routed, monkeypatch):
    now = time.time()
    marker = replicas._signer().sign(repr(now + 3600))
    assert replicas.follow_marker(marker) is True
    monkeypatch.setattr(replicas.time, "time", lambda: now + 31)
    assert router.db_for_read(Agent) == "replica1"


def _request_that(writes):
    def view(request):
        before = router.db_for_read(Agent)
        if writes:
            router.db_for_write(Agent)
        return HttpResponse(f"{before} {router.db_for_read(Agent)}")

    return view


def test_middleware_sets_a_cookie_after_a_write_and_follows_it(routed):
    factory = RequestFactory()
    writing = replicas.ReadYourWritesMiddleware(_request_that(writes=True))
    reading = replicas.ReadYourWritesMiddleware(_request_that(writes=False))

    first = writing(factory.post("/x"))
    assert first.content == b"replica1 default"
    cookie = first.cookies[replicas.COOKIE_NAME]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["max-age"] == 31

    follow = factory.get("/x")
    follow.COOKIES[replicas.COOKIE_NAME] = cookie.value
    answer = reading(follow)
    assert answer.content == b"default default"
    assert replicas.COOKIE_NAME not in answer.cookies  # a read does not extend the pin

    stranger = reading(factory.get("/x"))
    assert stranger.content == b"replica1 replica1"
    tampered = factory.get("/x")
    tampered.COOKIES[replicas.COOKIE_NAME] = cookie.value[:-2] + "zz"
    assert reading(tampered).content == b"replica1 replica1"


def test_each_request_starts_unpinned_in_the_same_thread(routed):
    router.db_for_write(Agent)  # this thread wrote outside any request
    answer = replicas.ReadYourWritesMiddleware(_request_that(writes=False))(RequestFactory().get("/x"))
    assert answer.content == b"replica1 replica1"
    assert router.db_for_read(Agent) == "default"  # the outer context keeps its own pin


def test_async_middleware_and_writes_through_sync_to_async(routed):
    from asgiref.sync import sync_to_async

    async def view(request):
        before = router.db_for_read(Agent)
        await sync_to_async(router.db_for_write)(Agent)  # how the async ORM writes
        return HttpResponse(f"{before} {router.db_for_read(Agent)}")

    middleware = replicas.ReadYourWritesMiddleware(view)
    response = asyncio.run(middleware(RequestFactory().post("/x")))
    assert response.content == b"replica1 default"
    assert replicas.COOKIE_NAME in response.cookies
