"""docker-compose.yml and .env.example cannot be run here (no Docker engine); read them instead."""

import re
from pathlib import Path

import yaml

BASE = Path(__file__).resolve().parent.parent


def compose():
    return yaml.safe_load((BASE / "docker-compose.yml").read_text())


def env_example():
    values = {}
    for line in (BASE / ".env.example").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_every_server_backend_has_a_service_with_healthcheck_and_volume():
    services = compose()["services"]
    for name in ("postgres", "mysql", "sqlserver", "oracle"):
        service = services[name]
        assert service["healthcheck"]["test"], name
        assert service["volumes"] and service["volumes"][0].split(":")[0] in compose()["volumes"], name
        assert service["ports"], name


def test_compose_defaults_match_env_example():
    env = env_example()
    text = (BASE / "docker-compose.yml").read_text()
    for variable in ("DB_NAME", "DB_USER", "DB_PASSWORD"):
        defaults = set(re.findall(r"\$\{" + variable + r":-([^}]*)\}", text))
        assert defaults == {env[variable]}, (variable, defaults, env[variable])
    ports = {name: s["ports"][0].split(":")[0] for name, s in compose()["services"].items() if "ports" in s}
    assert ports == {"postgres": "5432", "mysql": "3306", "sqlserver": "1433", "oracle": "1521"}


def test_env_example_lists_every_guide_variable():
    env = env_example()
    for variable in ("DB_TYPE", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD", "DB_SSL_MODE",
                     "SQLITE_PATH", "DB_POOL_SIZE", "DB_MAX_OVERFLOW", "DB_POOL_TIMEOUT", "DB_POOL_RECYCLE",
                     "ENCRYPTION_KEY", "DATABASE_URL", "SECRET_KEY", "DEBUG", "STORAGE_MODE", "LEGACY_DATA_DIR",
                     "DB_SLOW_QUERY_MS", "DB_STORAGE_QUOTA_MB", "TRUSTED_PROXIES"):
        assert variable in env, variable
