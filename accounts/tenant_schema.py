"""The tenant tables and the links between them, read from the models, and the DDL that
makes the database itself hold the organization boundary.

* **Composite tenant keys** (PostgreSQL, MariaDB/MySQL): every tenant table gets a unique
  ``(org_id, id)`` key, and every foreign key from one tenant table to another a second,
  composite foreign key ``(org_id, <fk>_id) -> target(org_id, id)``: a row can only point at
  a row of its own organization, whatever wrote it. MATCH SIMPLE, so a NULL link stays
  allowed; deferred to the end of the transaction on PostgreSQL like Django's own keys.
* **Row-level security** (PostgreSQL): one ``tenant_isolation`` policy per tenant table,
  see :mod:`accounts.rls` for the connection side.

Both are migration operations that read the tables from the migration state, so
``schema_sql`` renders them offline for every backend (SQLite, SQL Server and Oracle
get nothing: docs/security.md says what protects them).
"""

from __future__ import annotations

import hashlib

from django.db.migrations.operations.base import Operation

ORGANIZATION = "accounts.organization"
POLICY = "tenant_isolation"
# The active organization of the transaction; unset or '' (the value after a
# transaction-local setting ends) matches no row.
CURRENT_ORG = "(SELECT NULLIF(current_setting('app.current_org', true), '')::uuid)"


def _org_field(model):
    try:
        field = model._meta.get_field("org")
    except Exception:
        return None
    if getattr(field, "remote_field", None) is None or field.related_model._meta.label_lower != ORGANIZATION:
        return None
    return field


def tenant_models(apps) -> list:
    """Concrete, managed models with an ``org`` foreign key to Organization (users and audit
    logs included), from ``apps`` (the live registry or a migration state's)."""
    found = []
    for model in apps.get_models(include_auto_created=True):
        meta = model._meta
        if meta.proxy or not meta.managed or meta.swapped:
            continue
        if _org_field(model) is not None:
            found.append(model)
    return sorted(found, key=lambda m: m._meta.db_table)


def policy_tables(apps) -> dict[str, str]:
    """Table -> the column compared with the active organization: ``org_id`` on every tenant
    table, ``id`` on ``organizations`` itself."""
    tables = {m._meta.db_table: _org_field(m).column for m in tenant_models(apps)}
    organization = apps.get_model("accounts", "Organization")
    tables[organization._meta.db_table] = organization._meta.pk.column
    return dict(sorted(tables.items()))


def tenant_links(apps) -> list[tuple[str, str, str, str]]:
    """Every database foreign key from a tenant table to another tenant table's primary key:
    ``(table, column, target_table, target_column)``."""
    tenant = {m._meta.label_lower for m in tenant_models(apps)}
    links = []
    for model in tenant_models(apps):
        for field in model._meta.local_fields:
            remote = getattr(field, "remote_field", None)
            if remote is None or not field.many_to_one and not field.one_to_one or not field.db_constraint:
                continue
            target = field.related_model
            if target._meta.label_lower not in tenant or remote.field_name != target._meta.pk.name:
                continue
            links.append((model._meta.db_table, field.column, target._meta.db_table, target._meta.pk.column))
    return sorted(links)


def _name(*parts: str, suffix: str) -> str:
    # Deterministic, unique and within PostgreSQL's 63 / MariaDB's 64 characters.
    digest = hashlib.md5(".".join(parts).encode()).hexdigest()[:8]
    return f"{parts[0][:20]}_{parts[-1][:16]}_{digest}_{suffix}"


def org_key_name(table: str) -> str:
    return _name(table, "org_id", suffix="okey")


def org_link_name(table: str, column: str) -> str:
    return _name(table, column, suffix="ofk")


def composite_key_statements(apps, vendor: str, quote) -> list[str]:
    """ALTER TABLE statements adding the composite keys (none where the backend gets none)."""
    if vendor not in ("postgresql", "mysql"):
        return []
    statements = []
    for model in tenant_models(apps):
        table, org = model._meta.db_table, _org_field(model).column
        statements.append(
            f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(org_key_name(table))} "
            f"UNIQUE ({quote(org)}, {quote(model._meta.pk.column)})"
        )
    deferred = " DEFERRABLE INITIALLY DEFERRED" if vendor == "postgresql" else ""
    for table, column, target, target_column in tenant_links(apps):
        statements.append(
            f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(org_link_name(table, column))} "
            f"FOREIGN KEY ({quote('org_id')}, {quote(column)}) "
            f"REFERENCES {quote(target)} ({quote('org_id')}, {quote(target_column)}){deferred}"
        )
    return statements


def drop_composite_key_statements(apps, vendor: str, quote) -> list[str]:
    if vendor not in ("postgresql", "mysql"):
        return []
    drop_fk = "DROP CONSTRAINT" if vendor == "postgresql" else "DROP FOREIGN KEY"
    drop_key = "DROP CONSTRAINT" if vendor == "postgresql" else "DROP INDEX"
    statements = [
        f"ALTER TABLE {quote(table)} {drop_fk} {quote(org_link_name(table, column))}"
        for table, column, _target, _target_column in tenant_links(apps)
    ]
    statements += [
        f"ALTER TABLE {quote(m._meta.db_table)} {drop_key} {quote(org_key_name(m._meta.db_table))}"
        for m in tenant_models(apps)
    ]
    return statements


def link_statistics_name(table: str, column: str) -> str:
    return _name(table, column, suffix="ostat")


def link_statistics_statements(apps, vendor: str, quote) -> list[str]:
    """PostgreSQL: a link's target decides its organization, which the planner cannot know.

    A scoped query filters on both (``conversation_id = … AND org_id = …``); taking them as
    independent, the planner expects a conversation's thousand messages to be fifty and
    intersects the (org_id, id) key's bitmap with them, then sorts: 10 ms for the newest 50
    messages at 1,000,000 rows. Functional-dependency statistics on each (link, org_id) pair
    correct the estimate, and the query walks messages(conversation_id, created_at): 0.1 ms.
    """
    if vendor != "postgresql":
        return []
    return [
        f"CREATE STATISTICS {quote(link_statistics_name(table, column))} (dependencies) "
        f"ON {quote(column)}, {quote('org_id')} FROM {quote(table)}"
        for table, column, _target, _target_column in tenant_links(apps)
    ]


def drop_link_statistics_statements(apps, vendor: str, quote) -> list[str]:
    if vendor != "postgresql":
        return []
    return [
        f"DROP STATISTICS IF EXISTS {quote(link_statistics_name(table, column))}"
        for table, column, _target, _target_column in tenant_links(apps)
    ]


def policy_statements(table: str, column: str, quote) -> list[str]:
    condition = f"{quote(column)} = {CURRENT_ORG}"
    return [
        f"ALTER TABLE {quote(table)} ENABLE ROW LEVEL SECURITY",
        # FORCE: the owner role is held to the policy too (it bypasses through BYPASSRLS only).
        f"ALTER TABLE {quote(table)} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY {POLICY} ON {quote(table)} USING ({condition}) WITH CHECK ({condition})",
    ]


def drop_policy_statements(table: str, quote) -> list[str]:
    return [
        f"DROP POLICY IF EXISTS {POLICY} ON {quote(table)}",
        f"ALTER TABLE {quote(table)} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {quote(table)} DISABLE ROW LEVEL SECURITY",
    ]


class SchemaOperation(Operation):
    """Runs DDL computed from the migration state; changes no model state (also the base of
    ``agentforge_site.db_statistics.SkipColumnStatistics``)."""

    reduces_to_sql = True
    reversible = True

    def state_forwards(self, app_label, state):
        pass

    def forward_sql(self, apps, vendor, quote) -> list[str]:
        raise NotImplementedError

    def backward_sql(self, apps, vendor, quote) -> list[str]:
        raise NotImplementedError

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        for sql in self.forward_sql(to_state.apps, schema_editor.connection.vendor, schema_editor.quote_name):
            schema_editor.execute(sql)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        for sql in self.backward_sql(from_state.apps, schema_editor.connection.vendor, schema_editor.quote_name):
            schema_editor.execute(sql)

    def deconstruct(self):
        return self.__class__.__name__, [], {}


class AddTenantCompositeKeys(SchemaOperation):
    """Unique (org_id, id) on every tenant table and composite foreign keys for every link."""

    def describe(self):
        return "Add unique (org_id, id) keys and composite foreign keys between tenant tables"

    def forward_sql(self, apps, vendor, quote):
        return composite_key_statements(apps, vendor, quote)

    def backward_sql(self, apps, vendor, quote):
        return drop_composite_key_statements(apps, vendor, quote)


class AddTenantLinkStatistics(SchemaOperation):
    """Functional-dependency statistics on (link, org_id) for every tenant link (PostgreSQL)."""

    def describe(self):
        return "Tell the planner that each tenant link decides its row's organization"

    def forward_sql(self, apps, vendor, quote):
        return link_statistics_statements(apps, vendor, quote)

    def backward_sql(self, apps, vendor, quote):
        return drop_link_statistics_statements(apps, vendor, quote)


class EnableRowLevelSecurity(SchemaOperation):
    """The tenant_isolation policy, ENABLE and FORCE ROW LEVEL SECURITY on every tenant table
    (PostgreSQL only)."""

    def describe(self):
        return "Enable row-level security on every tenant table"

    def forward_sql(self, apps, vendor, quote):
        if vendor != "postgresql":
            return []
        return [sql for table, column in policy_tables(apps).items() for sql in policy_statements(table, column, quote)]

    def backward_sql(self, apps, vendor, quote):
        if vendor != "postgresql":
            return []
        return [sql for table in policy_tables(apps) for sql in drop_policy_statements(table, quote)]


def _mysql_relations_without_composite_keys(self, cursor, table_name):
    """MariaDB/MySQL ``get_relations`` leaving the composite tenant keys out.

    Django's ``check_constraints`` (run by ``loaddata``) checks each foreign-key column on
    its own: the ``org_id`` column of a composite key would be checked against the target's
    ``org_id`` alone (wrong under MATCH SIMPLE) and would hide the real ``org_id`` key to
    ``organizations``. Django's own single-column keys are still all checked.
    """
    cursor.execute(
        """
        SELECT column_name, referenced_column_name, referenced_table_name
        FROM information_schema.key_column_usage
        WHERE table_name = %s
            AND table_schema = DATABASE()
            AND referenced_table_schema = DATABASE()
            AND referenced_table_name IS NOT NULL
            AND referenced_column_name IS NOT NULL
            AND constraint_name NOT LIKE %s
        """,
        [table_name, r"%\_ofk"],
    )
    return {field: (other_field, other_table) for field, other_field, other_table in cursor.fetchall()}


def install() -> None:
    try:
        from django.db.backends.mysql.introspection import DatabaseIntrospection
    except Exception:  # no mysqlclient: no MariaDB connection either
        return
    DatabaseIntrospection.get_relations = _mysql_relations_without_composite_keys
