"""DB_* variables → DATABASES, for every DB_TYPE, and one-line configuration errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentforge_site.dbconfig import ConfigurationError, build_database

BASE = Path(__file__).resolve().parent.parent
SERVER = {"DB_HOST": "db.example.com", "DB_NAME": "agentforge", "DB_USER": "af", "DB_PASSWORD": "s3cret"}


def test_sqlite_is_the_default_with_wal_busy_timeout_and_persistent_connections():
    db = build_database({}, BASE)
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(BASE / "data" / "agentforge.db")
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    assert db["OPTIONS"]["timeout"] == 20
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert db["CONN_MAX_AGE"] == 3600 and db["CONN_HEALTH_CHECKS"] is True


def test_sqlite_path_and_recycle():
    db = build_database({"SQLITE_PATH": "/var/lib/af.db", "DB_POOL_RECYCLE": "120"}, BASE)
    assert db["NAME"] == "/var/lib/af.db"
    assert db["CONN_MAX_AGE"] == 120


def test_postgresql_maps_pool_variables_onto_the_native_psycopg_pool():
    env = dict(
        SERVER,
        DB_TYPE="postgresql",
        DB_POOL_SIZE="4",
        DB_MAX_OVERFLOW="6",
        DB_POOL_TIMEOUT="7",
        DB_POOL_RECYCLE="900",
        DB_SSL_MODE="verify-full",
    )
    db = build_database(env, BASE)
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["HOST"], db["PORT"], db["NAME"], db["USER"], db["PASSWORD"]) == (
        "db.example.com",
        "5432",
        "agentforge",
        "af",
        "s3cret",
    )
    assert db["OPTIONS"]["pool"] == {"min_size": 4, "max_size": 10, "timeout": 7, "max_lifetime": 900}
    assert db["OPTIONS"]["sslmode"] == "verify-full"
    # Django refuses persistent connections together with its pool.
    assert db["CONN_MAX_AGE"] == 0


def test_postgresql_without_pool_uses_persistent_connections():
    db = build_database(dict(SERVER, DB_TYPE="postgresql", DB_POOL_SIZE="0", DB_POOL_RECYCLE="60"), BASE)
    assert "pool" not in db["OPTIONS"] and "sslmode" not in db["OPTIONS"]
    assert db["CONN_MAX_AGE"] == 60


def test_mysql_utf8mb4_strict_mode_and_ssl():
    env = dict(SERVER, DB_TYPE="mysql", DB_PORT="3307", DB_SSL_MODE="require", DB_SSL_CA="/etc/ca.pem")
    db = build_database(env, BASE)
    assert db["ENGINE"] == "django.db.backends.mysql" and db["PORT"] == "3307"
    assert db["OPTIONS"]["charset"] == "utf8mb4"
    assert "STRICT_TRANS_TABLES" in db["OPTIONS"]["init_command"]
    assert db["OPTIONS"]["ssl_mode"] == "REQUIRED"
    assert db["OPTIONS"]["ssl"] == {"ca": "/etc/ca.pem"}
    assert db["CONN_MAX_AGE"] == 3600 and db["CONN_HEALTH_CHECKS"] is True
    assert db["TEST"]["CHARSET"] == "utf8mb4"


def test_mysql_without_ssl_has_no_ssl_options():
    db = build_database(dict(SERVER, DB_TYPE="mysql"), BASE)
    assert "ssl" not in db["OPTIONS"] and "ssl_mode" not in db["OPTIONS"]
    assert db["PORT"] == "3306"


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("require", "Encrypt=yes;TrustServerCertificate=yes"),
        ("verify-full", "Encrypt=yes;TrustServerCertificate=no"),
        ("disable", "Encrypt=no;TrustServerCertificate=yes"),
    ],
)
def test_sqlserver_uses_mssql_python_and_maps_ssl_to_encrypt(mode, expected):
    db = build_database(dict(SERVER, DB_TYPE="sqlserver", DB_SSL_MODE=mode), BASE)
    assert db["ENGINE"] == "mssql" and db["PORT"] == "1433"
    assert db["OPTIONS"]["python_driver"] == "mssql_python"
    assert db["OPTIONS"]["extra_params"] == expected


def test_sqlserver_without_ssl():
    db = build_database(dict(SERVER, DB_TYPE="sqlserver", DB_POOL_RECYCLE="30"), BASE)
    assert "extra_params" not in db["OPTIONS"]
    assert db["CONN_MAX_AGE"] == 30


def test_oracle_pool_option():
    db = build_database(
        dict(
            SERVER,
            DB_TYPE="oracle",
            DB_NAME="FREEPDB1",
            DB_POOL_SIZE="2",
            DB_MAX_OVERFLOW="3",
            DB_POOL_TIMEOUT="5",
            DB_POOL_RECYCLE="600",
        ),
        BASE,
    )
    assert db["ENGINE"] == "django.db.backends.oracle" and db["PORT"] == "1521"
    assert db["OPTIONS"]["pool"] == {
        "min": 2,
        "max": 5,
        "increment": 1,
        "wait_timeout": 5000,
        "max_lifetime_session": 600,
    }
    db = build_database(dict(SERVER, DB_TYPE="oracle", DB_POOL_SIZE="0"), BASE)
    assert "pool" not in db["OPTIONS"] and db["CONN_MAX_AGE"] == 3600


def test_database_url_is_an_alternative():
    db = build_database({"DATABASE_URL": "postgres://u:p%40ss@pg.local:6543/afdb?sslmode=require"}, BASE)
    assert (db["ENGINE"], db["HOST"], db["PORT"], db["NAME"], db["USER"], db["PASSWORD"]) == (
        "django.db.backends.postgresql",
        "pg.local",
        "6543",
        "afdb",
        "u",
        "p@ss",
    )
    assert db["OPTIONS"]["sslmode"] == "require"
    db = build_database({"DATABASE_URL": "mysql://root@127.0.0.1/af"}, BASE)
    assert db["ENGINE"] == "django.db.backends.mysql" and db["PORT"] == "3306"
    db = build_database({"DATABASE_URL": "sqlite:////tmp/x.db"}, BASE)
    assert db["NAME"] == "/tmp/x.db"


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"DB_TYPE": "mongodb"}, "DB_TYPE"),
        ({"DB_TYPE": "postgresql", "DB_NAME": "a", "DB_USER": "b"}, "DB_HOST"),
        ({"DB_TYPE": "mysql", "DB_HOST": "h", "DB_USER": "b"}, "DB_NAME"),
        ({"DB_TYPE": "oracle", "DB_HOST": "h", "DB_NAME": "a"}, "DB_USER"),
        (dict(SERVER, DB_TYPE="postgresql", DB_PORT="five"), "DB_PORT"),
        (dict(SERVER, DB_TYPE="postgresql", DB_POOL_SIZE="-1"), "DB_POOL_SIZE"),
        (dict(SERVER, DB_TYPE="postgresql", DB_SSL_MODE="sometimes"), "DB_SSL_MODE"),
        ({"DATABASE_URL": "redis://localhost/0"}, "DATABASE_URL"),
    ],
)
def test_bad_configuration_names_the_variable(env, variable):
    with pytest.raises(ConfigurationError) as excinfo:
        build_database(env, BASE)
    assert excinfo.value.variable == variable
    assert str(excinfo.value).startswith(f"{variable}: ")


def _manage(env_overrides, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL", "SQLITE"))}
    env.update({"ENV_FILE": "", "DJANGO_SETTINGS_MODULE": "agentforge_site.settings"})
    env.pop("SECRET_KEY", None)
    env.pop("ENCRYPTION_KEY", None)
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, str(BASE / "manage.py"), *args], env=env, cwd=BASE, capture_output=True, text=True, timeout=60
    )


GOOD = {"SECRET_KEY": "x" * 50, "ENCRYPTION_KEY": "dGVzdC1rZXktb25lLWZvci1hZ2VudGZvcmdlLXRlc3Q="}


@pytest.mark.parametrize(
    "env, message",
    [
        (dict(GOOD, DB_TYPE="db2"), "configuration error: DB_TYPE: unknown value 'db2'"),
        (dict(GOOD, DB_TYPE="postgresql", DB_NAME="a", DB_USER="b"), "configuration error: DB_HOST: is required"),
        (dict(GOOD, ENCRYPTION_KEY="not-a-key"), "configuration error: ENCRYPTION_KEY: key #1 is not a Fernet key"),
        (dict(GOOD, ENCRYPTION_KEY=GOOD["ENCRYPTION_KEY"] + ",short"), "configuration error: ENCRYPTION_KEY: key #2"),
        ({"ENCRYPTION_KEY": GOOD["ENCRYPTION_KEY"]}, "configuration error: SECRET_KEY: is required when DEBUG is off"),
        ({"SECRET_KEY": "x" * 50}, "configuration error: ENCRYPTION_KEY: is required when DEBUG is off"),
        (dict(GOOD, DEBUG="perhaps"), "configuration error: DEBUG: expected true/false"),
    ],
)
def test_bad_configuration_stops_startup_with_one_line(env, message):
    result = _manage(env, "check")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["migrate", "makemigrations", "import_json"])
def test_every_command_reports_a_bad_configuration_in_one_line(command):
    # A bare environment, as on a fresh server (from a shell with `env -i`, makemigrations used to
    # end in an AppRegistryNotReady traceback: manage.py now reads the settings first).
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/"),
        "ENV_FILE": "",
        "ENCRYPTION_KEY": GOOD["ENCRYPTION_KEY"],
    }
    result = subprocess.run(
        [sys.executable, str(BASE / "manage.py"), command],
        env=env,
        cwd=BASE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration error: SECRET_KEY: is required when DEBUG is off"


def test_settings_option_is_honoured_before_the_settings_are_read():
    # The test settings need no SECRET_KEY: with --settings the bare environment runs the command.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/"),
        "ENV_FILE": "",
        "DB_TYPE": "sqlite",
        "SQLITE_PATH": ":memory:",
    }
    result = subprocess.run(
        [sys.executable, str(BASE / "manage.py"), "check", "--settings=tests.settings"],
        env=env,
        cwd=BASE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_debug_gives_development_defaults():
    result = _manage({"DEBUG": "1", "SQLITE_PATH": ":memory:"}, "check")
    assert result.returncode == 0, result.stderr


def test_env_file_is_read(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "DB_TYPE=oracle\nDB_HOST=ora.example.com\nDB_NAME=FREEPDB1\nDB_USER=af\n"
        f"SECRET_KEY={'y' * 50}\nENCRYPTION_KEY={GOOD['ENCRYPTION_KEY']}\n"
    )
    result = _manage(
        {"ENV_FILE": str(env_file)},
        "shell",
        "-c",
        "from django.conf import settings; print(settings.DB_TYPE, settings.DATABASES['default']['HOST'])",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "oracle ora.example.com"


@pytest.mark.parametrize("command", ["migrate", "import_json"])
def test_a_database_that_does_not_exist_is_one_line_naming_the_reason(command, settings):
    """A wrong database name reached a pooled command as the pool's "couldn't get a connection
    after 30 s" traceback; manage.py now names the server's reason in one line."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "DATABASE_URL", "SQLITE_"))}
    env.update(
        ENV_FILE="",
        SECRET_KEY="x",
        ENCRYPTION_KEY=GOOD["ENCRYPTION_KEY"],
        DB_TYPE=settings.DB_TYPE,
        DB_POOL_TIMEOUT="2",
        DJANGO_SETTINGS_MODULE="agentforge_site.settings",
    )
    expected = {
        "sqlite": "unable to open database file",
        "postgresql": 'database "agentforge_missing_db" does not exist',
        "mysql": "Unknown database 'agentforge_missing_db'",
    }[settings.DB_TYPE]
    if settings.DB_TYPE == "sqlite":
        env["SQLITE_PATH"] = "/nonexistent-agentforge-dir/x.sqlite3"
    else:
        db = settings.DATABASES["default"]
        env.update(
            DB_HOST=db["HOST"],
            DB_PORT=str(db["PORT"]),
            DB_USER=db["USER"],
            DB_PASSWORD=db["PASSWORD"] or "",
            DB_NAME="agentforge_missing_db",
        )
    args = [command] + (["sample-data"] if command == "import_json" else [])
    result = subprocess.run(
        [sys.executable, str(BASE / "manage.py"), *args], env=env, cwd=BASE, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"database error: {expected}"
    assert "Traceback" not in result.stderr and "pool exhausted" not in result.stderr


def test_production_hashes_passwords_at_djangos_full_cost():
    # tests/settings.py swaps in quick twins; the real settings must not.
    from django.contrib.auth.hashers import BCryptSHA256PasswordHasher, PBKDF2PasswordHasher, ScryptPasswordHasher

    from agentforge_site import settings as production

    assert production.PASSWORD_HASHERS[:2] == [
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    ]
    assert "django.contrib.auth.hashers.ScryptPasswordHasher" in production.PASSWORD_HASHERS
    assert PBKDF2PasswordHasher.iterations == 1_000_000 and BCryptSHA256PasswordHasher.rounds == 12
    assert ScryptPasswordHasher.work_factor == 2**14
