"""Planner statistics kept current without the operator thinking of it.

PostgreSQL's autovacuum and InnoDB's persistent statistics catch up on their own, but only
some time after a bulk load; SQLite has no statistics until someone runs ANALYZE, and
without them its planner can walk ``messages(org_id, created_at)`` for a conversation's
newest messages instead of ``messages(conversation_id, created_at)`` (a hundred times
slower on an old conversation). So the tables an import filled are analysed as soon as it
commits, and ``migrate`` ends with SQLite's own ``PRAGMA optimize``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from django.db import DEFAULT_DB_ALIAS, connections

from accounts.tenant_schema import SchemaOperation

# SQLite: rows sampled per index (its documented choice for a fast ANALYZE). Enough to
# tell a conversation's hundreds of messages from an organization's millions.
SQLITE_ANALYSIS_LIMIT = 1000


def refresh_statistics(tables: Iterable[str], using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """ANALYZE ``tables`` on ``using``; returns the tables analysed (sorted)."""
    connection = connections[using]
    names = sorted(set(tables))
    if not names or (connection.vendor == "mysql" and connection.in_atomic_block):
        # ANALYZE TABLE commits the open transaction implicitly on MariaDB/MySQL: never inside
        # a caller's transaction (InnoDB also recalculates after a tenth of a table changed).
        return []
    quote = connection.ops.quote_name
    with _as_table_owner(connection), connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"PRAGMA analysis_limit = {SQLITE_ANALYSIS_LIMIT}")
            for name in names:
                cursor.execute(f"ANALYZE {quote(name)}")
        elif connection.vendor == "postgresql":
            cursor.execute("ANALYZE " + ", ".join(quote(name) for name in names))
        elif connection.vendor == "mysql":
            cursor.execute("ANALYZE TABLE " + ", ".join(quote(name) for name in names))
            cursor.fetchall()  # ANALYZE TABLE answers with a result set per table
        else:  # SQL Server and Oracle keep their statistics current by themselves
            return []
    return names


def _as_table_owner(connection):
    # PostgreSQL lets only a table's owner ANALYZE it; the application role under row-level
    # security owns nothing and would be skipped with a warning. Outside a transaction the
    # statement runs connected as the owner role (DB_MIGRATION_USER), as migrate does.
    if connection.vendor != "postgresql":
        return contextlib.nullcontext()
    from accounts import rls

    return rls.owner_connection(connection)


def optimize_after_migrate(sender, app_config=None, using=DEFAULT_DB_ALIAS, **kwargs) -> None:
    """post_migrate: SQLite's ``PRAGMA optimize`` (it analyses what its planner asks for).

    Django sends post_migrate once per app with models; this runs after the last one.
    """
    from django.apps import apps

    last = [config for config in apps.get_app_configs() if config.models_module is not None][-1]
    connection = connections[using]
    if app_config is last and connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA optimize")


class SkipColumnStatistics(SchemaOperation):
    """PostgreSQL: no planner statistics for columns that no query filters, joins or sorts on.

    Payloads (JSON, free text, the hash chain's hashes) and unique keys (whose unique index
    already tells the planner one row per value) cost ``ANALYZE`` most of its time on wide
    tables, the import's and autovacuum's alike, and no plan uses them. Elsewhere nothing: SQLite
    and InnoDB keep index statistics only."""

    def __init__(self, table: str, columns: list[str]):
        self.table, self.columns = table, list(columns)

    def _statements(self, vendor, quote, target: int) -> list[str]:
        if vendor != "postgresql":
            return []
        changes = ", ".join(f"ALTER COLUMN {quote(column)} SET STATISTICS {target}" for column in self.columns)
        return [f"ALTER TABLE {quote(self.table)} {changes}"]

    def forward_sql(self, apps, vendor, quote):
        return self._statements(vendor, quote, 0)

    def backward_sql(self, apps, vendor, quote):
        return self._statements(vendor, quote, -1)  # the server's default_statistics_target

    def describe(self):
        return f"No planner statistics for {len(self.columns)} columns of {self.table} (PostgreSQL)"

    def deconstruct(self):
        return self.__class__.__name__, [self.table, self.columns], {}
