"""Django settings for AgentForge DB, read from the environment or a ``.env`` file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import environ

from accounts.hashers import password_hashers
from agentforge_site import load_env_file
from agentforge_site.dbconfig import (
    ConfigurationError,
    build_caches,
    build_database,
    build_replicas,
    read_int,
    replica_settings,
)

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# The process environment wins over .env; ENV_FILE lets tests and operators pick another file.
load_env_file()


def _bool(name: str, default: bool) -> bool:
    # django-environ reads any unknown word as False; a typo must not silently flip a switch.
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(name, f"expected true/false, got {os.environ.get(name)!r}")


DEBUG = _bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ConfigurationError("SECRET_KEY", "is required when DEBUG is off")
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"

# A fixed, published key: only ever used when DEBUG is on and no key is set.
DEVELOPMENT_ENCRYPTION_KEY = "YWdlbnRmb3JnZS1kZXYta2V5LW5vdC1mb3ItcHJvZCE="
ENCRYPTION_KEY = os.environ.get("ENCRYPTION_KEY", "")
if not ENCRYPTION_KEY:
    if not DEBUG:
        raise ConfigurationError(
            "ENCRYPTION_KEY",
            "is required when DEBUG is off (make one with: python -c "
            "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')",
        )
    ENCRYPTION_KEY = DEVELOPMENT_ENCRYPTION_KEY

from agentforge_core.crypto import parse_key_list  # noqa: E402  (needs ENCRYPTION_KEY read first)

ENCRYPTION_KEYS = parse_key_list(ENCRYPTION_KEY)  # raises ConfigurationError naming ENCRYPTION_KEY

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Only these proxy addresses may set X-Forwarded-For (django-auditlog trusts it blindly).
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

# --- HTTPS and cookies (docs/deploying.md); all off by default, for plain-HTTP development ----
SECURE_SSL_REDIRECT = _bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = read_int(os.environ, "SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = _bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = _bool("CSRF_COOKIE_SECURE", False)
SESSION_COOKIE_AGE = read_int(os.environ, "SESSION_COOKIE_AGE", 12 * 3600, minimum=60)
# The session table keeps only the SHA-256 of each key: a key read from it does not sign in.
SESSION_ENGINE = "accounts.sessions"
# "X-Forwarded-Proto": the header a TLS-terminating proxy sets to "https". Anyone can send it,
# so it is only read when the proxies are named.
_proxy_ssl_header = os.environ.get("SECURE_PROXY_SSL_HEADER", "").strip()
if _proxy_ssl_header:
    if not TRUSTED_PROXIES:
        raise ConfigurationError("SECURE_PROXY_SSL_HEADER", "needs TRUSTED_PROXIES (the proxies that set it)")
    if not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_ssl_header):
        raise ConfigurationError("SECURE_PROXY_SSL_HEADER", f"expected a header name, got {_proxy_ssl_header!r}")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")

INSTALLED_APPS = [
    "agentforge_site.apps.AdminConfig",  # Django's admin with the second-factor step
    "agentforge_core.apps.AgentforgeCoreConfig",  # scoping and encryption, under every domain app
    # Before django.contrib.auth: its management commands (changepassword) win over auth's.
    "accounts.apps.AccountsConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "auditlog",
    "agentforge_agents.apps.AgentsConfig",
    "knowledge.apps.KnowledgeConfig",
    "conversations.apps.ConversationsConfig",
    "security.apps.SecurityConfig",
    "settings_app.apps.SettingsAppConfig",
    "legacy.apps.LegacyConfig",
    "operations.apps.OperationsConfig",
]

MIDDLEWARE = [
    "operations.requestlog.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin CSS and JS) straight from the application server, before sessions.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A database known to be down: 503 at once instead of every thread waiting on the pool.
    "operations.requestlog.DatabaseDownMiddleware",
    "security.middleware.RejectNulMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.OrganizationScopeMiddleware",
    "security.middleware.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "agentforge_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "agentforge_site.wsgi.application"
ASGI_APPLICATION = "agentforge_site.asgi.application"

DATABASES = {"default": build_database(dict(os.environ), BASE_DIR)}
# Read replicas (replica1, replica2…): reads go to a healthy one, writes and migrations to
# "default", and whoever just wrote reads from "default" for DB_REPLICA_STICKY_SECONDS.
_replicas = build_replicas(dict(os.environ), BASE_DIR, DATABASES["default"])
DATABASES.update(_replicas)
_replica_settings = replica_settings(dict(os.environ), _replicas)
DATABASE_REPLICAS = _replica_settings["DATABASE_REPLICAS"]
DB_REPLICA_MAX_LAG = _replica_settings["DB_REPLICA_MAX_LAG"]
DB_REPLICA_CHECK_INTERVAL = _replica_settings["DB_REPLICA_CHECK_INTERVAL"]
DB_REPLICA_STICKY_SECONDS = _replica_settings["DB_REPLICA_STICKY_SECONDS"]
DATABASE_ROUTERS = []
if DATABASE_REPLICAS:
    DATABASE_ROUTERS.append("agentforge_site.replicas.ReplicaRouter")
    # Outside the session middleware, so loading the session and the user follows the cookie too.
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.contrib.sessions.middleware.SessionMiddleware"),
        "agentforge_site.replicas.ReadYourWritesMiddleware",
    )
DB_TYPE = {
    "django.db.backends.sqlite3": "sqlite",
    "django.db.backends.postgresql": "postgresql",
    "django.db.backends.mysql": "mysql",
    "mssql": "sqlserver",
    "django.db.backends.oracle": "oracle",
}[DATABASES["default"]["ENGINE"]]

# CACHE_URL: locmem:// (default), redis://…, db://table, dummy:// (agentforge_site.caching).
CACHES = build_caches(dict(os.environ))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["accounts.backends.EmailBackend"]

# While the move can be rolled back to AgentForge's JSON files, passwords are hashed with
# PBKDF2-SHA256, which AgentForge verifies after export; once the move is declared final,
# bcrypt-SHA256 (plain bcrypt truncates at 72 bytes) and PBKDF2 hashes upgrade on sign-in.
LEGACY_ROLLBACK_POSSIBLE = _bool("LEGACY_ROLLBACK_POSSIBLE", True)
PASSWORD_HASHERS = password_hashers(LEGACY_ROLLBACK_POSSIBLE)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "accounts.passwords.OrganizationPasswordPolicyValidator"},
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# Sign-in throttling (accounts.throttle), counted in the default cache: failures per client address
# and per address + account, before the per-account lockout. 0 failures turns a counter off.
SIGNIN_THROTTLE_ACCOUNT_FAILURES = read_int(os.environ, "SIGNIN_THROTTLE_ACCOUNT_FAILURES", 3)
SIGNIN_THROTTLE_ACCOUNT_WINDOW = read_int(os.environ, "SIGNIN_THROTTLE_ACCOUNT_WINDOW", 1800, minimum=1)
SIGNIN_THROTTLE_ADDRESS_FAILURES = read_int(os.environ, "SIGNIN_THROTTLE_ADDRESS_FAILURES", 20)
SIGNIN_THROTTLE_ADDRESS_WINDOW = read_int(os.environ, "SIGNIN_THROTTLE_ADDRESS_WINDOW", 900, minimum=1)
SIGNIN_THROTTLE_BLOCK = read_int(os.environ, "SIGNIN_THROTTLE_BLOCK", 60, minimum=1)
SIGNIN_THROTTLE_MAX_BLOCK = read_int(os.environ, "SIGNIN_THROTTLE_MAX_BLOCK", 3600, minimum=1)
SIGNIN_THROTTLE_WAIT = read_int(os.environ, "SIGNIN_THROTTLE_WAIT", 10, minimum=1)

# The user model's email is unique per organization, not globally; EmailBackend handles it.
SILENCED_SYSTEM_CHECKS = ["auth.W004"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# collectstatic writes here (scripts/serve and the container's entry script run it).
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "data" / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed names (cached for a year by browsers) and gzip copies, served by WhiteNoise.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGIN_URL = "admin:login"

# --- Legacy JSON data and the parallel run ---------------------------------------------
LEGACY_DATA_DIR = env.str("LEGACY_DATA_DIR", default="")
# import_json reads and maps big audit-log and conversation files in a second process
# (legacy.migration.pipeline); off, or for files under the size, everything runs in one process.
LEGACY_IMPORT_PIPELINE = _bool("LEGACY_IMPORT_PIPELINE", True)
LEGACY_IMPORT_PIPELINE_MIN_BYTES = read_int(os.environ, "LEGACY_IMPORT_PIPELINE_MIN_BYTES", 4 * 1024 * 1024)
STORAGE_MODE = env.str("STORAGE_MODE", default="database").lower()
if STORAGE_MODE not in ("json", "dual", "database"):
    raise ConfigurationError("STORAGE_MODE", f"unknown value {STORAGE_MODE!r} (expected json, dual or database)")
# Dual mode: the JSON files follow the database within this many seconds, one rewrite per
# file for all the saves of that time (legacy.store.write_behind); 0 writes each save through.
try:
    DUAL_WRITE_DELAY = float(os.environ.get("DUAL_WRITE_DELAY") or 0.25)
except ValueError:
    raise ConfigurationError("DUAL_WRITE_DELAY", f"not a number: {os.environ['DUAL_WRITE_DELAY']!r}") from None
if not 0 <= DUAL_WRITE_DELAY <= 1:
    raise ConfigurationError("DUAL_WRITE_DELAY", f"{DUAL_WRITE_DELAY} is outside 0 to 1 second")
if STORAGE_MODE in ("json", "dual") and not LEGACY_ROLLBACK_POSSIBLE:
    # AgentForge still reads the JSON files: a bcrypt hash written there would lock users out.
    raise ConfigurationError(
        "LEGACY_ROLLBACK_POSSIBLE", f"cannot be false while STORAGE_MODE is {STORAGE_MODE} (the JSON files are live)"
    )

# --- Operations ---------------------------------------------------------------------------
DB_SLOW_QUERY_MS = env.float("DB_SLOW_QUERY_MS", default=1000.0)
DB_STORAGE_QUOTA_MB = env.float("DB_STORAGE_QUOTA_MB", default=0.0)
BACKUP_DIR = env.str("BACKUP_DIR", default=str(BASE_DIR / "data" / "backups"))

# --- Knowledge retrieval (knowledge.vectors) -----------------------------------------------
# The search caches' files (rebuild_vector_index writes them; processes start from them).
VECTOR_INDEX_DIR = env.str("VECTOR_INDEX_DIR", default=str(BASE_DIR / "data" / "vector-index"))
# From this many vectors in one (organization, tool, model) set, search goes through an
# approximate index (faiss IVF) whose candidates are re-ranked exactly; below, exact only.
VECTOR_ANN_MIN_VECTORS = read_int(os.environ, "VECTOR_ANN_MIN_VECTORS", 50_000)
VECTOR_ANN_NPROBE = read_int(os.environ, "VECTOR_ANN_NPROBE", 24, minimum=1)


# --- Audit trail (django-auditlog with our own log entry model) ---------------------------
# Signed checkpoints of the hash chains (security.checkpoints): the Ed25519 keys live outside
# the database, as the value or a file; a verifier needs only the public key.
def _key_setting(name: str) -> str:
    value, path = os.environ.get(name, "").strip(), os.environ.get(f"{name}_FILE", "").strip()
    if value and path:
        raise ConfigurationError(name, f"set {name} or {name}_FILE, not both")
    if path:
        try:
            return Path(path).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{name}_FILE", f"cannot read {path}: {exc}") from None
    return value


from agentforge_core.crypto import parse_signing_key, parse_verify_key  # noqa: E402

_signing = _key_setting("AUDIT_SIGNING_KEY")
AUDIT_SIGNING_KEY = parse_signing_key(_signing, "AUDIT_SIGNING_KEY") if _signing else None
_verify = _key_setting("AUDIT_VERIFY_KEY")
AUDIT_VERIFY_KEY = parse_verify_key(_verify, "AUDIT_VERIFY_KEY") if _verify else None
AUDIT_CHECKPOINT_DIR = env.str("AUDIT_CHECKPOINT_DIR", default=str(BASE_DIR / "data" / "audit-checkpoints"))
AUDIT_CHECKPOINT_INTERVAL = read_int(os.environ, "AUDIT_CHECKPOINT_INTERVAL", 3600)
AUDITLOG_LOGENTRY_MODEL = "security.AuditLog"
# auditlog's own migrations create its (swapped-out) auditlog_logentry table anyway; that
# orphan references django_content_type and breaks TRUNCATE-based flushes on PostgreSQL.
MIGRATION_MODULES = {"auditlog": None}
# Our default managers are organization-scoped and fail closed; auditlog must read old
# versions of rows through the unscoped base manager.
AUDITLOG_USE_BASE_MANAGER = True
AUDITLOG_STORE_JSON_CHANGES = True
AUDITLOG_DISABLE_REMOTE_ADDR = False

# LOG_FORMAT=json: one JSON object per line for log shippers. Every record carries the
# request id; django.request logs failed requests (5xx) with theirs.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ConfigurationError("LOG_FORMAT", f"unknown value {LOG_FORMAT!r} (expected plain or json)")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "operations.requestlog.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "operations.requestlog.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "loggers": {
        "agentforge": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}
