"""PostgreSQL row-level security, the connection side: every statement runs in a transaction
that names its organization.

The ``tenant_isolation`` policies (:mod:`accounts.tenant_schema`) let a row through only
when its organization equals ``app.current_org``, a setting that is always
transaction-local (``set_config(..., true)``): the psycopg pool and PgBouncer in
transaction mode hand one server connection to many tenants, so nothing may outlive the
transaction. An execute wrapper on every PostgreSQL connection (every alias) reads
:func:`agentforge_core.tenancy.current_org` before each statement:

========================================  ===================================================
state when the statement runs              what the transaction gets
========================================  ===================================================
inside ``org_scope(A)``                    ``app.current_org = A``: A's rows only, whatever
                                           the SQL (``all_orgs``, joins, ``raw()``, cursors)
inside ``unscoped()``                      the bypass role (``SET LOCAL ROLE``, BYPASSRLS)
no organization, ORM-compiled statement    the bypass role: scoped managers have already
                                           refused (OrgScopeError), so what reaches here is
                                           ``all_orgs`` / unscoped-manager system work
                                           (authentication, tokens, the importer's lookups)
no organization, hand-written SQL          nothing: no tenant row is visible or writable
========================================  ===================================================

Outside ``atomic()`` (Django's autocommit) a statement that needs a setting is sent as
``BEGIN; SELECT set_config(...); <statement>; COMMIT`` in one round trip; inside
``atomic()`` the setting is sent once per transaction and again when the organization
changes or a savepoint rollback undoes it. Connections whose role bypasses row-level
security anyway (a superuser, the owner role with BYPASSRLS) are left alone. Every bypassed
statement is logged on ``agentforge.rls`` (DEBUG). Roles and what a compromised application
role could still do: docs/row-level-security.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import uuid
import weakref

from agentforge_core.tenancy import ALL_ORGS, current_org

try:
    from psycopg import ClientCursor as _ClientCursor
except ImportError:  # no psycopg 3: no PostgreSQL connection to wrap
    _ClientCursor = ()

logger = logging.getLogger("agentforge.rls")

DEFAULT_BYPASS_ROLE = "agentforge_bypass"

# True while Django's SQL compiler runs a statement it built (any manager, any model).
orm_statement: contextvars.ContextVar[bool] = contextvars.ContextVar("agentforge_rls_orm", default=False)

BYPASS = "*"
_UNSET = object()  # nothing set in this transaction yet
_UNKNOWN = object()  # a savepoint rollback may have restored an older setting
# Statements that touch no table; SET TRANSACTION must even come first in its transaction.
_CONTROL = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "SET TRANSACTION")
# Statements PostgreSQL refuses inside a transaction block (maintenance, not tenant data).
_OUTSIDE_TRANSACTIONS = ("VACUUM", "CREATE DATABASE", "DROP DATABASE", "REINDEX", "CLUSTER")


@contextlib.contextmanager
def as_orm_statement():
    """Treat the block's hand-written SQL as the ORM statement it replaces (a prepared
    SELECT on an ``all_orgs`` manager): with no organization active it runs as system work
    on the bypass role, inside ``org_scope(A)`` it still sees A's rows only."""
    token = orm_statement.set(True)
    try:
        yield
    finally:
        orm_statement.reset(token)


def bypass_role(settings_dict: dict) -> str:
    # Validated by agentforge_site.dbconfig; doubled quotes keep a hand-made name a literal.
    return (settings_dict.get("RLS_BYPASS_ROLE") or DEFAULT_BYPASS_ROLE).replace("'", "''")


def wanted_state():
    """What the next statement's transaction must carry: an organization id (str), BYPASS, or
    None (no organization: the policies show nothing)."""
    active = current_org()
    if active is ALL_ORGS:
        return BYPASS
    if active is None:
        return BYPASS if orm_statement.get() else None
    return str(active if isinstance(active, uuid.UUID) else uuid.UUID(str(active)))


def state_sql(state, role: str) -> str:
    """One statement that sets ``state`` for the rest of the transaction."""
    if state == BYPASS:
        return f"SELECT set_config('role', '{role}', true), set_config('app.current_org', '', true)"
    org = state or ""  # validated UUID text: safe as a literal
    return f"SELECT set_config('role', 'none', true), set_config('app.current_org', '{org}', true)"


class _ConnectionState:
    __slots__ = ("enforced", "applied", "__weakref__")

    def __init__(self, enforced: bool):
        self.enforced = enforced
        self.applied = _UNSET


# Keyed by the psycopg connection: the pool hands the same one to many Django wrappers.
_states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state_of(raw) -> _ConnectionState:
    state = _states.get(raw)
    if state is None:
        with raw.cursor() as cur:
            cur.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
            row = cur.fetchone()
        state = _ConnectionState(enforced=not (row and row[0]))
        _states[raw] = state
    return state


def apply(connection, state=None) -> None:
    """Make the open transaction of ``connection`` carry the current state now.

    For code that talks to psycopg below Django's cursor (the importer's COPY): it must run
    inside ``atomic()``, and the state lasts until the transaction ends or changes.
    """
    raw = connection.connection
    if raw is None or connection.vendor != "postgresql":
        return
    conn_state = _state_of(raw)
    if not conn_state.enforced:
        return
    state = wanted_state() if state is None else state
    if raw.info.transaction_status == 0:  # IDLE: a new transaction starts now
        conn_state.applied = _UNSET
    if conn_state.applied is not _UNSET and conn_state.applied == state:
        return
    if state is None and conn_state.applied is _UNSET:
        return
    with connection.wrap_database_errors:
        raw.execute(state_sql(state, bypass_role(connection.settings_dict)))
    conn_state.applied = state


class TenantStatementWrapper:
    """``connection.execute_wrappers`` entry for PostgreSQL connections (see module doc)."""

    marker = "agentforge_rls"

    def __call__(self, execute, sql, params, many, context):
        connection = context["connection"]
        raw = connection.connection
        conn_state = _state_of(raw)
        if not conn_state.enforced:
            return execute(sql, params, many, context)
        state = wanted_state()
        if state == BYPASS and logger.isEnabledFor(logging.DEBUG):
            logger.debug("row-level security bypassed (%s): %.200s", connection.alias, sql)
        head = sql.lstrip()[:21].upper() if isinstance(sql, str) else ""
        if raw.autocommit:
            if state is None or head.startswith(_OUTSIDE_TRANSACTIONS):
                return execute(sql, params, many, context)
            return self._in_own_transaction(connection, raw, state, execute, sql, params, many, context)
        status = raw.info.transaction_status
        if status == 0:  # IDLE: psycopg opens a transaction with this statement
            conn_state.applied = _UNSET
        if status != 3 and not head.startswith(_CONTROL):  # 3 = INERROR: only a rollback can run
            if conn_state.applied is _UNSET or conn_state.applied != state:
                if not (state is None and conn_state.applied is _UNSET):
                    with connection.wrap_database_errors:
                        raw.execute(state_sql(state, bypass_role(connection.settings_dict)))
                conn_state.applied = state
        try:
            return execute(sql, params, many, context)
        finally:
            if head.startswith("ROLLBACK TO SAVEPOINT"):
                conn_state.applied = _UNKNOWN

    @staticmethod
    def _in_own_transaction(connection, raw, state, execute, sql, params, many, context):
        setting = state_sql(state, bypass_role(connection.settings_dict))
        cursor = getattr(context.get("cursor"), "cursor", None)
        if not many and isinstance(sql, str) and isinstance(cursor, _ClientCursor):
            # One round trip: psycopg's client-side binding sends the four statements as one
            # query; the cursor then moves past BEGIN and set_config to the statement's result.
            try:
                result = execute(f"BEGIN; {setting}; {sql}; COMMIT", params, many, context)
            except BaseException:
                if raw.info.transaction_status != 0:
                    raw.execute("ROLLBACK")
                raise
            cursor.nextset()
            cursor.nextset()
            return result
        with connection.wrap_database_errors:
            raw.execute(f"BEGIN; {setting}")
        try:
            result = execute(sql, params, many, context)
        except BaseException:
            if raw.info.transaction_status != 0:
                raw.execute("ROLLBACK")
            raise
        with connection.wrap_database_errors:
            raw.execute("COMMIT")  # deferred constraints are checked here
        return result


wrapper = TenantStatementWrapper()


def enabled_for(connection) -> bool:
    return connection.vendor == "postgresql"


def install_on(connection) -> bool:
    """Add the wrapper to one connection (idempotent)."""
    if not enabled_for(connection):
        return False
    if any(getattr(w, "marker", None) == wrapper.marker for w in connection.execute_wrappers):
        return False
    connection.execute_wrappers.append(wrapper)
    return True


def _on_connection_created(sender, connection, **kwargs):
    install_on(connection)


def install() -> None:
    """Every PostgreSQL connection of this process, whatever its alias."""
    from django.db import connections
    from django.db.backends.signals import connection_created

    try:
        from django.db.backends.postgresql.operations import DatabaseOperations
    except ImportError:  # no psycopg: no PostgreSQL connection either
        return
    # Statements the ORM builds are marked, on every connection from the first query on
    # (before connection_created fires): see accounts/rls_compilers.py.
    DatabaseOperations.compiler_module = "accounts.rls_compilers"
    connection_created.connect(_on_connection_created, dispatch_uid="agentforge_rls")
    for connection in connections.all(initialized_only=True):
        install_on(connection)


# --- roles ----------------------------------------------------------------------------------


def _switch_user(connection, user: str, password: str) -> None:
    if connection.settings_dict.get("USER") == user:
        return
    connection.close()
    if getattr(connection, "pool", None) is not None:
        connection.close_pool()  # pooled connections are logged in as the previous role
    connection.settings_dict["USER"] = user
    connection.settings_dict["PASSWORD"] = password


def use_owner_role(connection) -> None:
    """Connect ``connection`` as the owner role (DB_MIGRATION_USER) from now on."""
    settings_dict = connection.settings_dict
    if connection.vendor == "postgresql" and settings_dict.get("MIGRATION_USER"):
        settings_dict.setdefault("APP_USER", settings_dict["USER"])
        settings_dict.setdefault("APP_PASSWORD", settings_dict.get("PASSWORD") or "")
        _switch_user(connection, settings_dict["MIGRATION_USER"], settings_dict.get("MIGRATION_PASSWORD") or "")


def use_app_role(connection) -> None:
    """Back to the application's role (DB_USER) after :func:`use_owner_role`."""
    settings_dict = connection.settings_dict
    if connection.vendor == "postgresql" and settings_dict.get("APP_USER"):
        _switch_user(connection, settings_dict["APP_USER"], settings_dict.get("APP_PASSWORD") or "")


@contextlib.contextmanager
def owner_connection(connection):
    """Run the block connected as the owner role (schema changes, TRUNCATE), then go back.

    Not inside ``atomic()``: switching roles means a new connection. There the block runs as
    the current role.
    """
    previous = connection.settings_dict.get("USER")
    switch = connection.vendor == "postgresql" and not connection.in_atomic_block
    if switch:
        use_owner_role(connection)
    try:
        yield switch
    finally:
        if switch and connection.settings_dict.get("USER") != previous:
            use_app_role(connection)


def app_role(connection) -> str:
    return connection.settings_dict.get("APP_USER") or connection.settings_dict["USER"]


def grant_statements(connection) -> list[str]:
    """What the application role and the bypass role may do on the tables the owner made:
    read and write rows, nothing else (no DDL, no TRUNCATE, no ownership). The default
    privileges give the same to tables the owner creates later (pg_restore --clean)."""
    quote = connection.ops.quote_name
    roles = ", ".join(quote(r) for r in dict.fromkeys((app_role(connection), bypass_role(connection.settings_dict))))
    return [
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {roles}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {roles}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {roles}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {roles}",
    ]


def grant_app_privileges(connection) -> bool:
    """Run :func:`grant_statements` as the owner; False when the application is the owner."""
    if connection.vendor != "postgresql" or app_role(connection) == connection.settings_dict.get("USER"):
        return False
    with connection.cursor() as cursor:
        for sql in grant_statements(connection):
            cursor.execute(sql)
    return True
