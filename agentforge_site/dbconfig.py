"""Turn the DB_* environment variables (README, configuration) into Django's DATABASES entry.

Kept free of Django settings state so tests can feed it any environment and
assert the resulting dictionary for every backend.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured


class ConfigurationError(ImproperlyConfigured):
    """A bad environment variable: reported as one line, never a traceback."""

    def __init__(self, variable: str, problem: str):
        self.variable = variable
        super().__init__(f"{variable}: {problem}")


DB_TYPES = ("sqlite", "postgresql", "mysql", "sqlserver", "oracle")

ENGINES = {
    "sqlite": "django.db.backends.sqlite3",
    "postgresql": "django.db.backends.postgresql",
    "mysql": "django.db.backends.mysql",
    "sqlserver": "mssql",
    "oracle": "django.db.backends.oracle",
}

DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "sqlserver": 1433, "oracle": 1521}

URL_SCHEMES = {
    "sqlite": "sqlite",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "pgsql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "mssql": "sqlserver",
    "sqlserver": "sqlserver",
    "oracle": "oracle",
}

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

# libpq's sslmode words mapped onto what mysqlclient calls them.
MYSQL_SSL_MODES = {
    "disable": "DISABLED",
    "allow": "PREFERRED",
    "prefer": "PREFERRED",
    "require": "REQUIRED",
    "verify-ca": "VERIFY_CA",
    "verify-full": "VERIFY_IDENTITY",
}


def _read_number(env: dict, name: str, default, minimum, kind, expected: str):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(str(raw).strip())
    except ValueError:
        raise ConfigurationError(name, f"expected {expected}, got {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ConfigurationError(name, f"must be at least {minimum:g}, got {value:g}")
    return value


def read_int(env: dict, name: str, default: int, minimum: int = 0) -> int:
    return _read_number(env, name, default, minimum, int, "a whole number")


def read_float(env: dict, name: str, default: float, minimum: float = 0.0) -> float:
    return _read_number(env, name, default, minimum, float, "a number of seconds")


def _require(env: dict, name: str, db_type: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigurationError(name, f"is required when DB_TYPE={db_type}")
    return value


def _role_name(env: dict, name: str, default: str) -> str:
    value = (env.get(name) or "").strip() or default
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]{0,62}", value):
        raise ConfigurationError(name, f"not a PostgreSQL role name: {value!r}")
    return value


def _from_url(url: str, variable: str = "DATABASE_URL") -> dict:
    """Split DATABASE_URL into the same fields as the DB_* variables."""
    parsed = urlparse(url)
    scheme = parsed.scheme.split("+")[0].lower()
    if scheme not in URL_SCHEMES:
        raise ConfigurationError(variable, f"unknown scheme {parsed.scheme!r}")
    db_type = URL_SCHEMES[scheme]
    values = {"DB_TYPE": db_type}
    if db_type == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute.db, as in dj-database-url.
        path = unquote(parsed.path)
        values["SQLITE_PATH"] = path[1:]
        return values
    try:
        port = parsed.port
    except ValueError:
        raise ConfigurationError(variable, f"bad port in {parsed.netloc.rpartition('@')[2]!r}") from None
    values.update(
        DB_HOST=parsed.hostname or "",
        DB_PORT=str(port or ""),
        DB_NAME=unquote(parsed.path.lstrip("/")),
        DB_USER=unquote(parsed.username or ""),
        DB_PASSWORD=unquote(parsed.password or ""),
    )
    query = parse_qs(parsed.query)
    if "sslmode" in query:
        values["DB_SSL_MODE"] = query["sslmode"][0]
    return values


def build_database(env: dict, base_dir: Path) -> dict:
    """Return the ``DATABASES['default']`` dictionary for ``env``.

    ``env`` maps variable names to strings (os.environ plus .env). DATABASE_URL,
    when set, supplies the connection fields; the DB_* pool and SSL variables
    still apply on top of it.
    """
    env = dict(env)
    if env.get("DATABASE_URL"):
        url_values = _from_url(env["DATABASE_URL"])
        env.update({k: v for k, v in url_values.items() if v})

    db_type = (env.get("DB_TYPE") or "sqlite").strip().lower()
    if db_type not in DB_TYPES:
        raise ConfigurationError("DB_TYPE", f"unknown value {db_type!r} (expected one of: {', '.join(DB_TYPES)})")

    ssl_mode = (env.get("DB_SSL_MODE") or "").strip().lower()
    if ssl_mode and ssl_mode not in SSL_MODES:
        raise ConfigurationError("DB_SSL_MODE", f"unknown value {ssl_mode!r} (expected one of: {', '.join(SSL_MODES)})")

    pool_size = read_int(env, "DB_POOL_SIZE", 5)
    max_overflow = read_int(env, "DB_MAX_OVERFLOW", 10)
    pool_timeout = read_int(env, "DB_POOL_TIMEOUT", 30, minimum=1)
    pool_recycle = read_int(env, "DB_POOL_RECYCLE", 3600)

    if db_type == "sqlite":
        path = Path(env.get("SQLITE_PATH") or "data/agentforge.db")
        if not path.is_absolute() and str(path) != ":memory:":
            path = base_dir / path
        return {
            "ENGINE": ENGINES["sqlite"],
            "NAME": str(path),
            # Persistent connections stand in for a pool on SQLite.
            "CONN_MAX_AGE": pool_recycle,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                # WAL lets readers work during a write; IMMEDIATE takes the write
                # lock at BEGIN so concurrent writers wait (busy timeout) instead
                # of failing half-way with "database is locked".
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "timeout": read_int(env, "SQLITE_BUSY_TIMEOUT", 20, minimum=1),
                "transaction_mode": "IMMEDIATE",
            },
            "TEST": {"NAME": env.get("SQLITE_TEST_PATH") or None},
        }

    database = {
        "ENGINE": ENGINES[db_type],
        "HOST": _require(env, "DB_HOST", db_type),
        "PORT": str(read_int(env, "DB_PORT", DEFAULT_PORTS[db_type], minimum=1)),
        "NAME": _require(env, "DB_NAME", db_type),
        "USER": _require(env, "DB_USER", db_type),
        "PASSWORD": env.get("DB_PASSWORD") or "",
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {},
        "TEST": {},
    }
    options = database["OPTIONS"]

    if db_type == "postgresql":
        if pool_size > 0:
            # Django's native psycopg 3 pool; persistent connections must stay off with it.
            options["pool"] = {
                "min_size": pool_size,
                "max_size": pool_size + max_overflow,
                "timeout": pool_timeout,
                "max_lifetime": pool_recycle or 3600,
            }
        else:
            database["CONN_MAX_AGE"] = pool_recycle
        if ssl_mode:
            options["sslmode"] = ssl_mode
        options["application_name"] = env.get("DB_APPLICATION_NAME") or "agentforge-db"
        # Server-side prepared statements: psycopg 3 prepares a statement on the server
        # after it ran this many times on a connection. They need server-side binding
        # (Django's default client-side cursors never prepare) and break behind PgBouncer
        # in transaction mode before 1.21, so they stay off unless asked for.
        prepare = (env.get("DB_PREPARE_THRESHOLD") or "").strip().lower()
        if prepare not in ("", "off"):
            options["server_side_binding"] = True
            options["prepare_threshold"] = read_int(env, "DB_PREPARE_THRESHOLD", 5)
        # Row-level security (accounts/rls.py): the application's role (DB_USER) neither owns
        # the tables nor bypasses the policies; migrate, backup and restore connect as the
        # owner role; unscoped() system work switches to the bypass role for a transaction.
        database["MIGRATION_USER"] = (env.get("DB_MIGRATION_USER") or "").strip() or database["USER"]
        database["MIGRATION_PASSWORD"] = (
            env.get("DB_MIGRATION_PASSWORD") if env.get("DB_MIGRATION_USER") else database["PASSWORD"]
        ) or ""
        database["RLS_BYPASS_ROLE"] = _role_name(env, "DB_RLS_BYPASS_ROLE", "agentforge_bypass")
    elif db_type == "mysql":
        database["CONN_MAX_AGE"] = pool_recycle
        options.update(
            charset="utf8mb4",
            init_command="SET sql_mode='STRICT_TRANS_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO'",
            isolation_level="read committed",
            connect_timeout=pool_timeout,
        )
        database["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
        if ssl_mode:
            options["ssl_mode"] = MYSQL_SSL_MODES[ssl_mode]
            if ssl_mode != "disable":
                options["ssl"] = {
                    key: env[var]
                    for key, var in (("ca", "DB_SSL_CA"), ("cert", "DB_SSL_CERT"), ("key", "DB_SSL_KEY"))
                    if env.get(var)
                }
    elif db_type == "sqlserver":
        database["CONN_MAX_AGE"] = pool_recycle
        options["python_driver"] = "mssql_python"
        if ssl_mode:
            encrypt = "no" if ssl_mode in ("disable", "allow", "prefer") else "yes"
            trust = "no" if ssl_mode.startswith("verify") else "yes"
            options["extra_params"] = f"Encrypt={encrypt};TrustServerCertificate={trust}"
    elif db_type == "oracle":
        # DB_NAME is the service name; Django builds host:port/service from it.
        if pool_size > 0:
            options["pool"] = {
                "min": pool_size,
                "max": pool_size + max_overflow,
                "increment": 1,
                "wait_timeout": pool_timeout * 1000,
                "max_lifetime_session": pool_recycle,
            }
        else:
            database["CONN_MAX_AGE"] = pool_recycle
    return database


# --- read replicas ---------------------------------------------------------------------------

REPLICA_ALIAS = "replica{}"


def _split_host(item: str) -> tuple[str, str]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port or "")."""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        return host, rest.lstrip(":")
    host, _, port = item.partition(":") if item.count(":") == 1 else (item, "", "")
    return host, port


def build_replicas(env: dict, base_dir: Path, primary: dict) -> dict:
    """``DATABASES`` entries ``replica1``, ``replica2``… for the configured read replicas.

    ``DB_REPLICA_HOSTS`` (``host[:port]``, comma-separated) reuses the primary's name, user,
    password and port unless ``DB_REPLICA_NAME/USER/PASSWORD/PORT/SSL_MODE`` say otherwise;
    ``DATABASE_REPLICA_URLS`` gives whole URLs. Each entry goes through :func:`build_database`,
    as the primary does, so pool, SSL and per-connection settings are the same on every alias.
    No replicas configured: an empty dictionary.
    """
    hosts = [h.strip() for h in (env.get("DB_REPLICA_HOSTS") or "").split(",") if h.strip()]
    urls = [u.strip() for u in (env.get("DATABASE_REPLICA_URLS") or "").split(",") if u.strip()]
    if hosts and urls:
        raise ConfigurationError(
            "DATABASE_REPLICA_URLS", "set either DB_REPLICA_HOSTS or DATABASE_REPLICA_URLS, not both"
        )
    variable = "DB_REPLICA_HOSTS" if hosts else "DATABASE_REPLICA_URLS"
    if not hosts and not urls:
        return {}
    if primary["ENGINE"] != ENGINES["postgresql"]:
        db_type = next(t for t, engine in ENGINES.items() if engine == primary["ENGINE"])
        # Lag is read from PostgreSQL's recovery functions; no other backend is routed.
        raise ConfigurationError(variable, f"read replicas need a PostgreSQL primary (DB_TYPE={db_type})")

    base = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    base.update(
        DB_TYPE="postgresql",
        DB_NAME=env.get("DB_REPLICA_NAME") or primary["NAME"],
        DB_USER=env.get("DB_REPLICA_USER") or primary["USER"],
        DB_PASSWORD=env.get("DB_REPLICA_PASSWORD") or primary["PASSWORD"],
        DB_PORT=env.get("DB_REPLICA_PORT") or primary["PORT"],
        DB_SSL_MODE=env.get("DB_REPLICA_SSL_MODE") or primary["OPTIONS"].get("sslmode", ""),
    )
    replicas = {}
    for number, item in enumerate(hosts or urls, start=1):
        replica_env = dict(base)
        if hosts:
            host, port = _split_host(item)
            if not host or (port and not port.isdigit()):
                raise ConfigurationError(variable, f"expected host or host:port, got {item!r}")
            replica_env.update(DB_HOST=host, DB_PORT=port or base["DB_PORT"])
        else:
            url_values = _from_url(item, variable)
            if url_values["DB_TYPE"] != "postgresql":
                raise ConfigurationError(
                    variable, f"a replica of a PostgreSQL primary must be postgres://, got {item.split(':')[0]!r}"
                )
            replica_env.update({k: v for k, v in url_values.items() if v})
        try:
            database = build_database(replica_env, base_dir)
        except ConfigurationError as exc:
            # The URL without its user and password: configuration errors end up in logs.
            shown = re.sub(r"//[^@/]*@", "//", item)
            raise ConfigurationError(variable, f"replica {shown!r}: {exc}") from None
        # Django's test runner points a mirror at the test database instead of creating one.
        database["TEST"] = {"MIRROR": "default"}
        replicas[REPLICA_ALIAS.format(number)] = database
    return replicas


def replica_settings(env: dict, replicas: dict) -> dict:
    """Lag limit, check interval and read-your-writes time (seconds).

    A replica may be up to MAX_LAG behind when checked and fall further behind until the
    next check, so a write is only guaranteed on every replica in use after
    MAX_LAG + CHECK_INTERVAL: a shorter read-your-writes time would break the promise.
    """
    max_lag = read_float(env, "DB_REPLICA_MAX_LAG", 10.0)
    interval = read_float(env, "DB_REPLICA_CHECK_INTERVAL", 2.0, minimum=0.05)
    floor = max_lag + interval
    sticky = read_float(env, "DB_REPLICA_STICKY_SECONDS", floor)
    if sticky < floor:
        raise ConfigurationError(
            "DB_REPLICA_STICKY_SECONDS",
            f"must be at least DB_REPLICA_MAX_LAG + DB_REPLICA_CHECK_INTERVAL = {floor:g}, got {sticky:g}",
        )
    return {
        "DATABASE_REPLICAS": list(replicas),
        "DB_REPLICA_MAX_LAG": max_lag,
        "DB_REPLICA_CHECK_INTERVAL": interval,
        "DB_REPLICA_STICKY_SECONDS": sticky,
    }


# --- the cache ------------------------------------------------------------------------------

CACHE_SCHEMES = ("locmem", "redis", "rediss", "unix", "db", "dummy")


def build_caches(env: dict) -> dict:
    """``CACHES`` for ``CACHE_URL``.

    ``locmem://`` (the default: one process's memory), ``redis://[:password@]host:6379/0``
    (``rediss://`` with TLS, ``unix:///path.sock?db=0``) through Django's own Redis backend,
    made to run uncached while Redis is down, ``db://table_name`` (Django's database cache;
    ``manage.py createcachetable`` makes the table), ``dummy://`` (no cache).
    """
    url = (env.get("CACHE_URL") or "locmem://").strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in CACHE_SCHEMES:
        raise ConfigurationError(
            "CACHE_URL",
            f"unknown scheme in {re.sub(r'//[^@/]*@', '//', url)!r} (expected one of: {', '.join(s + '://' for s in CACHE_SCHEMES)})",
        )
    timeout = read_int(env, "CACHE_TIMEOUT", 300, minimum=1)
    socket_timeout = read_float(env, "CACHE_SOCKET_TIMEOUT", 1.0, minimum=0.01)
    rest = url.partition("://")[2]
    cache = {"TIMEOUT": timeout, "KEY_PREFIX": env.get("CACHE_KEY_PREFIX") or "af"}
    if scheme == "locmem":
        cache.update(BACKEND="django.core.cache.backends.locmem.LocMemCache", LOCATION=rest or "agentforge")
    elif scheme == "dummy":
        cache.update(BACKEND="django.core.cache.backends.dummy.DummyCache")
    elif scheme == "db":
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", rest):
            raise ConfigurationError("CACHE_URL", f"db:// needs a table name, e.g. db://cache_entries, got {url!r}")
        cache.update(BACKEND="django.core.cache.backends.db.DatabaseCache", LOCATION=rest)
    else:
        parsed = urlparse(url)
        try:
            parsed.port
        except ValueError:
            raise ConfigurationError("CACHE_URL", f"bad port in {parsed.netloc.rpartition('@')[2]!r}") from None
        if scheme != "unix" and not parsed.hostname:
            raise ConfigurationError("CACHE_URL", "a redis:// URL needs a host, e.g. redis://127.0.0.1:6379/0")
        database = parsed.path.lstrip("/")
        if database and not database.isdigit():
            raise ConfigurationError("CACHE_URL", f"the Redis database must be a number, got {database!r}")
        cache.update(
            BACKEND="agentforge_site.caching.ResilientRedisCache",
            LOCATION=url,
            # A cache that does not answer quickly is treated as down: reads fall back to the
            # database instead of waiting.
            OPTIONS={
                "socket_connect_timeout": socket_timeout,
                "socket_timeout": socket_timeout,
                "health_check_interval": 30,
            },
        )
    return {"default": cache}
