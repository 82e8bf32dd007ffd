"""Cached reads: CACHE_URL, per-organization keys, every write path invalidates, Redis down."""

from __future__ import annotations

import logging
import os
import pickle

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from agentforge_core.tenancy import org_scope
from agentforge_site import caching
from agentforge_site.dbconfig import ConfigurationError, build_caches, build_database

# The tests' own Redis database and prefix: other suites on this machine use others.
REDIS_TEST_URL = os.environ.get("CACHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


def caches_for(url: str) -> dict:
    caches = build_caches({"CACHE_URL": url, "CACHE_KEY_PREFIX": f"af-test-{os.getpid()}"})
    return caches


def clear_own_keys():
    """Empty the default cache. On Redis ``cache.clear()`` is FLUSHDB: it would empty the
    database under every other test run sharing this Redis (CI runs the three backends side
    by side), so only this run's key prefix is deleted there."""
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        backend.clear()
        return
    assert backend.key_prefix, "a shared Redis needs a key prefix per test run"
    client = backend._cache.get_client(write=True)
    for key in client.scan_iter(match=f"{backend.key_prefix}:*", count=1000):
        client.delete(key)


def queries(func):
    with CaptureQueriesContext(connection) as captured:
        value = func()
    return value, len(captured.captured_queries)


# --- CACHE_URL --------------------------------------------------------------------------------


def test_default_is_local_memory():
    assert build_caches({})["default"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"


def test_redis_url_uses_djangos_redis_backend_made_resilient():
    config = build_caches({"CACHE_URL": "redis://:pw@cache.internal:6380/2"})["default"]
    assert config["BACKEND"] == "agentforge_site.caching.ResilientRedisCache"
    assert issubclass(
        caching.ResilientRedisCache, __import__("django.core.cache.backends.redis", fromlist=["x"]).RedisCache
    )
    assert config["LOCATION"] == "redis://:pw@cache.internal:6380/2"


def test_database_and_dummy_caches():
    assert build_caches({"CACHE_URL": "db://cache_entries"})["default"]["LOCATION"] == "cache_entries"
    assert (
        build_caches({"CACHE_URL": "dummy://"})["default"]["BACKEND"] == "django.core.cache.backends.dummy.DummyCache"
    )


@pytest.mark.parametrize(
    "url,message",
    [
        ("memcached://x", "CACHE_URL: unknown scheme in 'memcached://x'"),
        ("redis://host:port/0", "CACHE_URL: bad port in 'host:port'"),
        ("redis://127.0.0.1:6379/zero", "CACHE_URL: the Redis database must be a number, got 'zero'"),
        ("db://", "CACHE_URL: db:// needs a table name"),
        ("redis://user:secret@:6379/0", "CACHE_URL: a redis:// URL needs a host"),
    ],
)
def test_bad_cache_url_is_one_line_naming_the_variable(url, message):
    with pytest.raises(ConfigurationError) as info:
        build_caches({"CACHE_URL": url})
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text and "secret" not in text


def test_prepare_threshold_turns_on_server_side_binding():
    env = {"DB_TYPE": "postgresql", "DB_HOST": "h", "DB_NAME": "n", "DB_USER": "u"}
    assert "prepare_threshold" not in build_database(env, None)["OPTIONS"]
    options = build_database({**env, "DB_PREPARE_THRESHOLD": "2"}, None)["OPTIONS"]
    assert options["prepare_threshold"] == 2 and options["server_side_binding"] is True
    assert "prepare_threshold" not in build_database({**env, "DB_PREPARE_THRESHOLD": "off"}, None)["OPTIONS"]
    with pytest.raises(ConfigurationError, match="DB_PREPARE_THRESHOLD: expected a whole number"):
        build_database({**env, "DB_PREPARE_THRESHOLD": "always"}, None)


# --- organization isolation -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_three_organizations_never_see_each_others_cached_settings(cache_backend, make_org):
    from settings_app.models import OrgSetting, org_setting_values

    orgs = [make_org(f"Org {name}") for name in "ABC"]
    for org in orgs:
        OrgSetting.all_orgs.create(org=org, key="security.password_min_length", value=len(org.name) * 2)
        OrgSetting.all_orgs.create(org=org, key="ui.banner", value=f"hello {org.name}")
    expected = {
        org.pk: {"security.password_min_length": len(org.name) * 2, "ui.banner": f"hello {org.name}"} for org in orgs
    }
    for org in orgs:  # fill the cache, one organization after another
        assert org_setting_values(org.pk) == expected[org.pk]
    for org in reversed(orgs):  # served from the cache: no query, and each its own
        value, count = queries(lambda: org_setting_values(org.pk))
        assert (value, count) == (expected[org.pk], 0)

    OrgSetting.all_orgs.filter(org=orgs[1], key="ui.banner").update(value="changed")
    assert org_setting_values(orgs[1].pk)["ui.banner"] == "changed"
    for org in (orgs[0], orgs[2]):  # the others' entries survive the write
        assert queries(lambda: org_setting_values(org.pk)) == (expected[org.pk], 0)


@pytest.mark.django_db(transaction=True)
def test_cached_secrets_stay_out_of_the_cache(cache_backend, make_org, make_user):
    from agentforge_agents.models import Agent, AgentTool, Tool, agent_for_chat
    from settings_app.models import OrgSetting, org_setting_values

    org = make_org()
    setting = OrgSetting(org=org, key="llm.api_key")
    setting.set_value("sk-XYZZY-secret-setting", secret=True)
    setting.save()
    tool = Tool.all_orgs.create(org=org, name="CRM", type="api", credentials={"token": "XYZZY-tool-token"})
    agent = Agent.all_orgs.create(org=org, name="Helper")
    AgentTool.all_orgs.create(org=org, agent=agent, tool=tool, tool_ref=str(tool.pk), position=0)

    assert "llm.api_key" not in org_setting_values(org.pk)
    with org_scope(org):
        loaded = agent_for_chat(agent.pk)
        assert [t.name for t in loaded.chat_tools] == ["CRM"]
    for value in _stored_values():
        assert b"XYZZY" not in value
    with org_scope(org):  # the credentials are still there, read from the database when used
        assert agent_for_chat(agent.pk).chat_tools[0].credentials == {"token": "XYZZY-tool-token"}


def _stored_values():
    """Every value the default cache holds, as bytes."""
    if hasattr(cache, "_cache") and isinstance(cache._cache, dict):  # locmem
        return [v if isinstance(v, bytes) else pickle.dumps(v) for v in cache._cache.values()]
    client = cache._cache.get_client()
    return [client.get(key) or b"" for key in client.keys(f"*{cache.key_prefix}*")]


# --- every write path invalidates ------------------------------------------------------------


@pytest.fixture
def roles(make_org, make_user):
    from accounts.models import Permission, Role, UserRole

    org = make_org(legacy_id="org_cache")  # the JSON-era store names organizations so
    user = make_user(org)
    parent = Role.all_orgs.create(org=org, name="Base")
    role = Role.all_orgs.create(org=org, name="Editor", parent=parent)
    UserRole.all_orgs.create(org=org, user=user, role=role)
    read = Permission.objects.create(codename="agents:read")
    with org_scope(org):
        role.permissions.add(read)
    return {"org": org, "user": user, "parent": parent, "role": role, "read": read}


def _perms(user):
    from accounts.models import User

    return User.all_orgs.get(pk=user.pk).effective_permissions()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "path",
    [
        "m2m_add",
        "save",
        "delete",
        "queryset_update",
        "queryset_delete",
        "bulk_create",
        "bulk_update",
        "catalog_rename",
        "group_membership",
        "store_save",
    ],
)
def test_every_write_path_changes_the_cached_permissions(cache_backend, roles, path):
    from accounts.models import Group, GroupMembership, GroupRole, Permission, Role, RolePermission, UserRole

    org, user, role, parent = roles["org"], roles["user"], roles["role"], roles["parent"]
    write = Permission.objects.create(codename="agents:write")
    assert _perms(user) == {"agents:read"}
    assert queries(lambda: _perms(user))[1] == 1  # the user row; the role part from the cache

    expected = {"agents:read", "agents:write"}
    if path == "m2m_add":
        with org_scope(org):
            parent.permissions.add(write)  # inherited through the parent role
    elif path == "save":
        RolePermission(org=org, role=role, permission=write).save()
    elif path == "delete":
        RolePermission.all_orgs.get(role=role).delete()
        expected = set()
    elif path == "queryset_update":
        RolePermission.all_orgs.filter(role=role).update(permission=write)
        expected = {"agents:write"}
    elif path == "queryset_delete":
        UserRole.all_orgs.filter(user=user).delete()
        expected = set()
    elif path == "bulk_create":
        RolePermission.all_orgs.bulk_create([RolePermission(org=org, role=parent, permission=write)])
    elif path == "bulk_update":
        grant = RolePermission.all_orgs.get(role=role)
        grant.permission = write
        RolePermission.all_orgs.bulk_update([grant], ["permission"])
        expected = {"agents:write"}
    elif path == "catalog_rename":
        Permission.objects.filter(pk=roles["read"].pk).update(codename="agents:view")
        expected = {"agents:view"}
    elif path == "group_membership":
        group = Group.all_orgs.create(org=org, name="Writers")
        other = Role.all_orgs.create(org=org, name="Writer")
        RolePermission.all_orgs.create(org=org, role=other, permission=write)
        GroupRole.all_orgs.create(org=org, group=group, role=other)
        assert _perms(user) == {"agents:read"}
        GroupMembership.all_orgs.create(org=org, group=group, user=user)
    elif path == "store_save":
        from legacy.store.db_store import DatabaseStore

        store = DatabaseStore()
        record = store.get("security/roles", role.legacy_id or str(role.pk))
        record["permissions"] = ["agents:read", "agents:write"]
        store.save("security/roles", record)
    assert _perms(user) == expected


@pytest.mark.django_db(transaction=True)
def test_agent_for_chat_follows_tool_links_and_edits(cache_backend, make_org):
    from agentforge_agents.models import Agent, AgentTool, Tool, agent_for_chat

    org = make_org()
    agent = Agent.all_orgs.create(org=org, name="Helper")
    first = Tool.all_orgs.create(org=org, name="Search", type="api")
    AgentTool.all_orgs.create(org=org, agent=agent, tool=first, tool_ref="a", position=0)
    with org_scope(org):
        assert [t.name for t in agent_for_chat(agent.pk).chat_tools] == ["Search"]
        assert queries(lambda: agent_for_chat(agent.pk))[1] == 0
        second = Tool.all_orgs.create(org=org, name="Mail", type="email")
        AgentTool.all_orgs.create(org=org, agent=agent, tool=second, tool_ref="b", position=1)
        assert [t.name for t in agent_for_chat(agent.pk).chat_tools] == ["Search", "Mail"]
        Tool.all_orgs.filter(pk=first.pk).update(name="Web search")
        assert [t.name for t in agent_for_chat(agent.pk).chat_tools] == ["Web search", "Mail"]
        Agent.all_orgs.filter(pk=agent.pk).update(name="Assistant")
        assert agent_for_chat(agent.pk).name == "Assistant"


@pytest.mark.django_db(transaction=True)
def test_system_settings_are_cached_and_follow_writes(cache_backend):
    from settings_app.models import SystemSetting, system_setting_values

    SystemSetting.objects.create(key="tenancy.mode", value="multi")
    assert system_setting_values() == {"tenancy.mode": "multi"}
    assert queries(system_setting_values) == ({"tenancy.mode": "multi"}, 0)
    SystemSetting.objects.filter(key="tenancy.mode").update(value="single")
    assert system_setting_values() == {"tenancy.mode": "single"}


@pytest.mark.django_db(transaction=True)
def test_import_json_invalidates_every_organization(cache_backend, data_dir, default_org):
    from django.core.management import call_command

    from accounts.passwords import password_policy
    from settings_app.models import OrgSetting

    call_command("import_json", str(data_dir), verbosity=0)
    before = password_policy(default_org.pk)
    OrgSetting.all_orgs.filter(org=default_org, key="security.password_min_length").delete()
    # A write the hooks cannot see (raw SQL), then the importer puts the setting back.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM org_settings")
    assert password_policy(default_org.pk)["password_min_length"] == 8
    call_command("import_json", str(data_dir), verbosity=0)
    assert password_policy(default_org.pk) == before


@pytest.mark.django_db(transaction=True)
def test_a_transaction_neither_reads_stale_entries_nor_leaves_its_rolled_back_rows(cache_backend, make_org):
    from settings_app.models import OrgSetting, org_setting_values

    org = make_org()
    OrgSetting.all_orgs.create(org=org, key="k", value=1)
    assert org_setting_values(org.pk) == {"k": 1}
    with pytest.raises(RuntimeError), transaction.atomic():
        OrgSetting.all_orgs.filter(org=org).update(value=2)
        assert org_setting_values(org.pk) == {"k": 2}  # its own write, not the cached entry
        raise RuntimeError("roll back")
    assert org_setting_values(org.pk) == {"k": 1}


# --- cache off, and Redis down ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_the_cache_off_every_read_goes_to_the_database(make_org):
    from settings_app.models import OrgSetting, org_setting_values

    with override_settings(CACHES=caches_for("dummy://")):
        org = make_org()
        OrgSetting.all_orgs.create(org=org, key="k", value=1)
        assert queries(lambda: org_setting_values(org.pk)) == ({"k": 1}, 1)
        assert queries(lambda: org_setting_values(org.pk)) == ({"k": 1}, 1)


@pytest.mark.django_db(transaction=True)
def test_redis_down_runs_uncached_logs_once_and_shows_in_health(client, make_org, caplog):
    from operations.health import build_report
    from settings_app.models import OrgSetting, org_setting_values

    with override_settings(CACHES=caches_for(CLOSED_PORT_URL)):
        caching.status.down_since = None
        org = make_org()
        OrgSetting.all_orgs.create(org=org, key="k", value=1)
        with caplog.at_level(logging.WARNING, logger="agentforge.cache"):
            for _ in range(3):
                assert org_setting_values(org.pk) == {"k": 1}
        warnings = [r for r in caplog.records if r.name == "agentforge.cache"]
        assert len(warnings) == 1 and "cache unavailable" in warnings[0].getMessage()
        report = build_report()
        assert (
            report["checks"]["cache"]["available"] is False and "Connection" in report["checks"]["cache"]["last_error"]
        )
        assert any(alert["check"] == "cache" for alert in report["alerts"])
        response = client.get("/health/")
        assert response.status_code == 200
        # A counter (a sign-in throttle) reads as just started, rather than failing the request.
        assert cache.incr("throttle:10.0.0.1") == 1 and cache.get("throttle:10.0.0.1", "none") == "none"
    caching.status.down_since = None
