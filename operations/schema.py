"""Render the DDL of every migration for any backend without a database server.

Django's ``sqlmigrate`` connects (to read applied migrations and server version).
Here a backend's DatabaseWrapper is built but never connected: the server version
comes from ``--server-version`` (or a current default), introspection sees an empty
database, and each migration is applied to a ``collect_sql`` schema editor.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

from django.conf import settings
from django.db.migrations.loader import MigrationLoader
from django.db.utils import load_backend

from agentforge_site.dbconfig import DB_TYPES, ENGINES

# The oldest release each backend must support, as (major, minor); used for features
# that depend on the server version (e.g. MariaDB's JSON check constraints).
DEFAULT_SERVER_VERSIONS = {
    "postgresql": (15, 0),
    "mysql": (10, 11),  # MariaDB
    "sqlserver": (2019, 0),
    "oracle": (19, 0),
    "sqlite": (3, 40),
}


class OfflineError(RuntimeError):
    """Something tried to reach the database server while rendering offline."""


class _EmptyDatabaseCursor:
    """Introspection answers for a database that has no tables yet."""

    rowcount = 0
    description = None

    def execute(self, *args, **kwargs):
        return self

    def executemany(self, *args, **kwargs):
        return self

    def fetchone(self):
        return None

    def fetchall(self):
        return []

    def fetchmany(self, *args, **kwargs):
        return []

    def close(self):
        pass

    def __iter__(self):
        return iter(())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def offline_connection(db_type: str, server_version: tuple[int, int] | None = None):
    """A DatabaseWrapper for ``db_type`` that answers without ever connecting."""
    if db_type not in DB_TYPES:
        raise ValueError(f"unknown DB_TYPE {db_type!r}")
    version = server_version or DEFAULT_SERVER_VERSIONS[db_type]
    settings_dict = copy.deepcopy(settings.DATABASES["default"])
    if settings_dict["ENGINE"] != ENGINES[db_type]:
        settings_dict = {
            "ENGINE": ENGINES[db_type],
            "NAME": "agentforge",
            "USER": "",
            "PASSWORD": "",
            "HOST": "",
            "PORT": "",
            "OPTIONS": {"python_driver": "mssql_python"} if db_type == "sqlserver" else {},
        }
    settings_dict.setdefault("OPTIONS", {})
    settings_dict["OPTIONS"].pop("pool", None)
    for key, default in (
        ("TIME_ZONE", None),
        ("CONN_MAX_AGE", 0),
        ("CONN_HEALTH_CHECKS", False),
        ("AUTOCOMMIT", True),
        ("ATOMIC_REQUESTS", False),
        ("TEST", {}),
    ):
        settings_dict.setdefault(key, default)
    backend = load_backend(settings_dict["ENGINE"])
    # The alias only names the connection for routers; nothing is registered under it.
    connection = backend.DatabaseWrapper(settings_dict, alias="default")

    def refuse(*args, **kwargs):
        raise OfflineError("rendering offline: no connection to the database server is made")

    connection.connect = refuse
    connection.get_new_connection = refuse
    connection.ensure_connection = refuse

    @contextmanager
    def empty_cursor(*args, **kwargs):
        yield _EmptyDatabaseCursor()

    connection.cursor = lambda *a, **k: _CursorContext()
    connection.temporary_connection = empty_cursor
    connection.disable_constraint_checking = lambda: True
    connection.enable_constraint_checking = lambda: None
    connection.introspection.get_constraints = lambda cursor, table_name: {}
    connection.introspection.table_names = lambda *a, **k: []
    connection.introspection.get_table_list = lambda *a, **k: []
    connection.introspection.get_sequences = lambda *a, **k: []

    # Server-version answers the backends would otherwise ask the server for.
    if db_type == "mysql":
        connection.__dict__["mysql_server_data"] = {
            "version": f"{version[0]}.{version[1]}.0-MariaDB",
            "sql_mode": "STRICT_TRANS_TABLES",
            "default_storage_engine": "InnoDB",
            "sql_auto_is_null": False,
            "lower_case_table_names": False,
            "has_zoneinfo_database": True,
        }
    elif db_type == "postgresql":
        connection.__dict__["pg_version"] = version[0] * 10000 + version[1]
        # Django binds DDL parameters through a live psycopg connection; quote them
        # with psycopg's default (connection-free) adapters instead.
        from psycopg import sql as pg_sql

        def compose_sql(statement, params):
            if not params:
                return statement
            if isinstance(params, dict):
                return statement % {k: pg_sql.quote(v) for k, v in params.items()}
            return statement % tuple(pg_sql.quote(v) for v in params)

        connection.ops.compose_sql = compose_sql
    elif db_type == "oracle":
        connection.__dict__["oracle_version"] = version
    elif db_type == "sqlserver":
        type(connection)._known_versions[connection.alias] = version[0]
        type(connection)._known_azures[connection.alias] = False
    return connection


class _CursorContext(_EmptyDatabaseCursor):
    """``connection.cursor()`` is used both as a context manager and directly."""


def migration_plan(loader: MigrationLoader):
    """Every migration of every app, in dependency order."""
    plan, seen = [], set()
    for leaf in sorted(loader.graph.leaf_nodes()):
        for key in loader.graph.forwards_plan(leaf):
            if key not in seen:
                seen.add(key)
                plan.append(key)
    return plan


def render_schema(db_type: str, server_version=None, apps: list[str] | None = None):
    """Yield ``(app_label, migration_name, [sql statements])`` for every migration."""
    connection = offline_connection(db_type, server_version)
    loader = MigrationLoader(None, ignore_no_migrations=True)
    for app_label, name in migration_plan(loader):
        if apps and app_label not in apps:
            continue
        migration = loader.graph.nodes[(app_label, name)]
        state = loader.project_state((app_label, name), at_end=False)
        with connection.schema_editor(collect_sql=True, atomic=False) as editor:
            migration.apply(state, editor, collect_sql=True)
        yield app_label, name, list(editor.collected_sql)
