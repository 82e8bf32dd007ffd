"""docker-compose.yml and .env.example cannot be run here (no Docker engine); read them instead."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.once  # reads the deployment files, no database

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
    assert ports == {
        "postgres": "5432",
        "mysql": "3306",
        "sqlserver": "1433",
        "oracle": "1521",
        "app": "8000",
        "redis": "6379",
    }


def test_env_example_lists_every_guide_variable():
    env = env_example()
    for variable in (
        "DB_TYPE",
        "DB_HOST",
        "DB_PORT",
        "DB_NAME",
        "DB_USER",
        "DB_PASSWORD",
        "DB_SSL_MODE",
        "SQLITE_PATH",
        "DB_POOL_SIZE",
        "DB_MAX_OVERFLOW",
        "DB_POOL_TIMEOUT",
        "DB_POOL_RECYCLE",
        "ENCRYPTION_KEY",
        "DATABASE_URL",
        "SECRET_KEY",
        "DEBUG",
        "STORAGE_MODE",
        "LEGACY_DATA_DIR",
        "DB_SLOW_QUERY_MS",
        "DB_STORAGE_QUOTA_MB",
        "TRUSTED_PROXIES",
    ):
        assert variable in env, variable


def dockerfile_stages():
    """The Dockerfile's stages: a list of (FROM line, instruction lines), continuation lines joined."""
    text = (BASE / "Dockerfile").read_text().replace("\\\n", " ")
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append((line, []))
        else:
            stages[-1][1].append(line)
    return stages


def test_app_service_waits_for_its_database_migrates_once_and_checks_health():
    services = compose()["services"]
    app, migrate = services["app"], services["migrate"]
    assert app["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    # The workers share one cache (cached reads, slow-query event limit, health counters).
    assert app["environment"]["CACHE_URL"] == "${CACHE_URL:-redis://redis:6379/0}"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert (migrate["command"], migrate["restart"], app["command"]) == (["migrate"], "no", ["serve"])
    assert app["image"] == migrate["image"] and migrate["build"] == "."
    assert "http://127.0.0.1:8000/health/" in " ".join(app["healthcheck"]["test"])
    for service in (app, migrate):
        env = service["environment"]
        assert (env["DB_TYPE"], env["DB_HOST"]) == ("postgresql", "postgres")
        assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")  # no default key, ever


def test_dockerfile_is_debian12_slim_multi_stage_non_root_without_compilers():
    stages = dockerfile_stages()
    assert [line for line, _ in stages] == ["FROM python:3.11-slim-bookworm AS build", "FROM python:3.11-slim-bookworm"]
    build, final = stages[0][1], stages[1][1]
    assert any("build-essential" in line for line in build)
    final_text = "\n".join(final)
    for compiler in ("build-essential", "gcc", "-dev ", "pkg-config"):
        assert compiler not in final_text, compiler
    assert "COPY --from=build /opt/venv /opt/venv" in final
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users == ["agentforge"]
    assert "useradd --system --uid 10001" in final_text
    assert 'ENTRYPOINT ["scripts/docker-entrypoint"]' in final and 'CMD ["serve"]' in final
    # Collected at build time into a directory the unprivileged user cannot write: not again at start.
    assert any("collectstatic" in line for line in final if line.startswith("RUN "))
    assert "COLLECTSTATIC=false" in final_text
    assert any(line.startswith("HEALTHCHECK") and "/health/" in line for line in final)
    entry = BASE / "scripts" / "docker-entrypoint"
    assert entry.is_file() and entry.stat().st_mode & 0o111


def test_the_image_installs_the_runtime_requirements_only():
    # requirements.txt is the runtime; tests, benchmarks and lint are in requirements-test.txt.
    lines = (BASE / "requirements.txt").read_text().splitlines()
    names = {re.split(r"[\[<>=]", line)[0].lower() for line in lines if line and not line.startswith("#")}
    assert {"django", "gunicorn", "whitenoise", "psycopg", "mysqlclient"} <= names
    assert not names & {"pytest", "pytest-django", "playwright", "hypothesis", "uvicorn", "ruff", "psutil"}
    dockerfile = (BASE / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r /tmp/requirements.txt -c /tmp/requirements.lock" in dockerfile
    ignored = (BASE / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", "data"} <= set(ignored)


def test_the_image_compiles_the_native_module_in_the_build_stage():
    build, final = dockerfile_stages()[0][1], dockerfile_stages()[1][1]
    assert any("scripts/build-native" in line for line in build if line.startswith("RUN "))
    assert "COPY --from=build /build/agentforge_core/_native.*.so /app/agentforge_core/" in final
    assert "**/*.so" in (BASE / ".dockerignore").read_text().split()  # never a module built for another Python


@pytest.mark.once
def test_build_native_compiles_the_module_in_a_fresh_tree(tmp_path):
    """scripts/build-native from a clean copy: the module is built in place and imports; a second
    run with nothing changed compiles nothing."""
    (tmp_path / "agentforge_core").mkdir()
    (tmp_path / "scripts").mkdir()
    shutil.copy(BASE / "agentforge_core" / "_native.c", tmp_path / "agentforge_core")
    shutil.copy(BASE / "scripts" / "build-native", tmp_path / "scripts")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["scripts/build-native"], cwd=tmp_path, env=env, check=True, capture_output=True)
    built = list((tmp_path / "agentforge_core").glob("_native*.so"))
    assert len(built) == 1
    probe = (
        "import agentforge_core._native as n, uuid; print(n.CopyRow([('u', 2, None, None)])({'u': uuid.UUID(int=255)}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "b'000000000000000000000000000000ff\\n'"
    mtime = built[0].stat().st_mtime_ns
    subprocess.run(["scripts/build-native"], cwd=tmp_path, env=env, check=True, capture_output=True)
    assert built[0].stat().st_mtime_ns == mtime
