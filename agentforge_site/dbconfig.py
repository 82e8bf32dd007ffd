"""Turn the guide's DB_* environment variables into Django's DATABASES entry.

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


def read_int(env: dict, name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigurationError(name, f"expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(name, f"must be at least {minimum}, got {value}")
    return value


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


def _from_url(url: str) -> dict:
    """Split DATABASE_URL into the same fields as the DB_* variables."""
    parsed = urlparse(url)
    scheme = parsed.scheme.split("+")[0].lower()
    if scheme not in URL_SCHEMES:
        raise ConfigurationError("DATABASE_URL", f"unknown scheme {parsed.scheme!r}")
    db_type = URL_SCHEMES[scheme]
    values = {"DB_TYPE": db_type}
    if db_type == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute.db, as in dj-database-url.
        path = unquote(parsed.path)
        values["SQLITE_PATH"] = path[1:]
        return values
    values.update(
        DB_HOST=parsed.hostname or "",
        DB_PORT=str(parsed.port or ""),
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
        raise ConfigurationError(
            "DB_TYPE", f"unknown value {db_type!r} (expected one of: {', '.join(DB_TYPES)})"
        )

    ssl_mode = (env.get("DB_SSL_MODE") or "").strip().lower()
    if ssl_mode and ssl_mode not in SSL_MODES:
        raise ConfigurationError(
            "DB_SSL_MODE", f"unknown value {ssl_mode!r} (expected one of: {', '.join(SSL_MODES)})"
        )

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
