"""A paginator for the admin's big tables (the audit log, security events).

Django's paginator runs ``COUNT(*)`` over the whole filtered result on every page; on a
table of a million rows that is most of the page's time, and on MariaDB a filter on a
column without an index made it a full scan (0.9 s). This one counts exactly up to
``exact_limit`` rows, and above that:

* PostgreSQL: the planner's estimate (``pg_class.reltuples`` unfiltered, ``EXPLAIN``
  filtered), which its statistics keep close;
* MariaDB/MySQL: the exact count when the server finishes it within ``count_budget``
  (``max_statement_time``), else the optimizer's estimate (``information_schema`` unfiltered,
  ``EXPLAIN FORMAT=JSON`` rows × filtered), so no page waits on a count;
* SQLite and others: the exact count (SQLite counts a million rows in well under the
  page budget).

The count shown above the limit may therefore be approximate; the rows of every page are
always exact.
"""

from __future__ import annotations

import json

from django.core.paginator import Paginator
from django.db import DatabaseError, connections, models
from django.utils.functional import cached_property


class EstimatedCountPaginator(Paginator):
    exact_limit = 1_000
    count_budget = 0.15  # seconds an exact count may take on MariaDB before the estimate is used

    @cached_property
    def count(self):
        queryset = self.object_list
        if not isinstance(queryset, models.QuerySet):
            return super().count
        exact = queryset.order_by()[: self.exact_limit + 1].count()
        if exact <= self.exact_limit:
            return exact
        connection = connections[queryset.db]
        if connection.vendor == "postgresql":
            estimate = self._postgresql_estimate(queryset, connection)
        elif connection.vendor == "mysql":
            # Unfiltered: the table's estimate at once (an exact count of a big table never fits).
            counted = self._mysql_count_within_budget(queryset, connection) if queryset.query.where else None
            if counted is not None:
                return counted
            estimate = self._mysql_estimate(queryset, connection)
        else:
            return queryset.count()
        return max(estimate, exact) if estimate is not None else queryset.count()

    @staticmethod
    def _select_sql(queryset):
        return queryset.order_by().values("pk").query.sql_with_params()

    def _postgresql_estimate(self, queryset, connection):
        try:
            with connection.cursor() as cursor:
                if not queryset.query.where:
                    cursor.execute(
                        "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                        [queryset.model._meta.db_table],
                    )
                    row = cursor.fetchone()
                    return int(row[0]) if row and row[0] and row[0] > 0 else None
                sql, params = self._select_sql(queryset)
                cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
                plan = cursor.fetchone()[0]
                plan = json.loads(plan) if isinstance(plan, str) else plan
                return int(plan[0]["Plan"]["Plan Rows"])
        except DatabaseError:  # an estimate is a nicety: fall back to counting
            return None

    def _mysql_count_within_budget(self, queryset, connection):
        sql, params = self._select_sql(queryset)
        statement = (
            f"SET STATEMENT max_statement_time={self.count_budget:.3f} FOR SELECT COUNT(*) FROM ({sql}) AS counted"
        )
        try:
            # No savepoint needed: an interrupted statement leaves a MariaDB transaction usable.
            with connection.cursor() as cursor:
                cursor.execute(statement, params)
                return int(cursor.fetchone()[0])
        except DatabaseError as exc:
            if getattr(exc, "args", (None,))[0] in (1969, 3024):  # MariaDB / MySQL: time limit reached
                return None
            raise

    def _mysql_estimate(self, queryset, connection):
        try:
            with connection.cursor() as cursor:
                if not queryset.query.where:
                    cursor.execute(
                        "SELECT TABLE_ROWS FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                        [queryset.model._meta.db_table],
                    )
                    row = cursor.fetchone()
                    return int(row[0]) if row and row[0] else None
                sql, params = self._select_sql(queryset)
                cursor.execute("EXPLAIN FORMAT=JSON " + sql, params)
                block = json.loads(cursor.fetchone()[0])["query_block"]
                table = (block.get("nested_loop") or [block])[0]["table"]
                return int(table["rows"] * float(table.get("filtered", 100)) / 100)
        except (DatabaseError, KeyError, IndexError, TypeError, ValueError):
            return None
