"""Django settings for AgentForge DB, read from the environment or a ``.env`` file."""

from __future__ import annotations

import os
from pathlib import Path

import environ

from accounts.hashers import password_hashers
from agentforge_site.dbconfig import ConfigurationError, build_database, read_int

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# The process environment wins over .env; ENV_FILE lets tests and operators pick another file.
_env_file = os.environ.get("ENV_FILE", str(BASE_DIR / ".env"))
if _env_file and os.path.isfile(_env_file):
    environ.Env.read_env(_env_file, overwrite=False)


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

from security.crypto import parse_key_list  # noqa: E402  (needs ENCRYPTION_KEY read first)

ENCRYPTION_KEYS = parse_key_list(ENCRYPTION_KEY)  # raises ConfigurationError naming ENCRYPTION_KEY

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Only these proxy addresses may set X-Forwarded-For (django-auditlog trusts it blindly).
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "auditlog",
    "accounts.apps.AccountsConfig",
    "agents.apps.AgentsConfig",
    "knowledge.apps.KnowledgeConfig",
    "conversations.apps.ConversationsConfig",
    "security.apps.SecurityConfig",
    "settings_app.apps.SettingsAppConfig",
    "legacy.apps.LegacyConfig",
    "operations.apps.OperationsConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
DB_TYPE = {
    "django.db.backends.sqlite3": "sqlite",
    "django.db.backends.postgresql": "postgresql",
    "django.db.backends.mysql": "mysql",
    "mssql": "sqlserver",
    "django.db.backends.oracle": "oracle",
}[DATABASES["default"]["ENGINE"]]

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

# The user model's email is unique per organization, not globally; EmailBackend handles it.
SILENCED_SYSTEM_CHECKS = ["auth.W004"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "data" / "static"

LOGIN_URL = "admin:login"

# --- Legacy JSON data and the parallel run ---------------------------------------------
LEGACY_DATA_DIR = env.str("LEGACY_DATA_DIR", default="")
# import_json reads and maps big audit-log and conversation files in a second process
# (legacy.pipeline); off, or for files under the size, everything runs in one process.
LEGACY_IMPORT_PIPELINE = _bool("LEGACY_IMPORT_PIPELINE", True)
LEGACY_IMPORT_PIPELINE_MIN_BYTES = read_int(os.environ, "LEGACY_IMPORT_PIPELINE_MIN_BYTES", 4 * 1024 * 1024)
STORAGE_MODE = env.str("STORAGE_MODE", default="database").lower()
if STORAGE_MODE not in ("json", "dual", "database"):
    raise ConfigurationError("STORAGE_MODE", f"unknown value {STORAGE_MODE!r} (expected json, dual or database)")
if STORAGE_MODE in ("json", "dual") and not LEGACY_ROLLBACK_POSSIBLE:
    # AgentForge still reads the JSON files: a bcrypt hash written there would lock users out.
    raise ConfigurationError(
        "LEGACY_ROLLBACK_POSSIBLE", f"cannot be false while STORAGE_MODE is {STORAGE_MODE} (the JSON files are live)"
    )

# --- Operations ---------------------------------------------------------------------------
DB_SLOW_QUERY_MS = env.float("DB_SLOW_QUERY_MS", default=1000.0)
DB_STORAGE_QUOTA_MB = env.float("DB_STORAGE_QUOTA_MB", default=0.0)
BACKUP_DIR = env.str("BACKUP_DIR", default=str(BASE_DIR / "data" / "backups"))

# --- Audit trail (django-auditlog with our own log entry model) ---------------------------
AUDITLOG_LOGENTRY_MODEL = "security.AuditLog"
# auditlog's own migrations create its (swapped-out) auditlog_logentry table anyway; that
# orphan references django_content_type and breaks TRUNCATE-based flushes on PostgreSQL.
MIGRATION_MODULES = {"auditlog": None}
# Our default managers are organization-scoped and fail closed; auditlog must read old
# versions of rows through the unscoped base manager.
AUDITLOG_USE_BASE_MANAGER = True
AUDITLOG_STORE_JSON_CHANGES = True
AUDITLOG_DISABLE_REMOTE_ADDR = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "agentforge": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    },
}
