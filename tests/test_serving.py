"""Serving for real: deploy settings from the environment, request ids in headers, logs and the
audit trail, 503 (not 500) when the database is down, and the production server (scripts/serve,
the container's entry script) answering with a styled admin and its static files."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest
from django import db
from django.http import HttpResponse
from django.urls import path

from operations.requestlog import JsonFormatter, RequestIdFilter

PROJECT_DIR = Path(__file__).resolve().parent.parent
ENCRYPTION_KEY = "dGVzdC1rZXktb25lLWZvci1hZ2VudGZvcmdlLXRlc3Q="
HTTPS_ON = {
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
}


def production_env(tmp_path, **extra) -> dict:
    """A DEBUG-off configuration on a scratch SQLite file, nothing inherited from a .env or the tests."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            (
                "DB_",
                "DATABASE_URL",
                "DJANGO_",
                "SQLITE_",
                "SECURE_",
                "SESSION_",
                "CSRF_",
                "TRUSTED_",
                "LOG_",
                "WEB_",
                "BIND",
                "STATIC_ROOT",
                "PYTEST_",
            )
        )
    }
    env.update(
        ENV_FILE="",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ENCRYPTION_KEY=ENCRYPTION_KEY,
        ALLOWED_HOSTS="agentforge.example.com,127.0.0.1",
        DB_TYPE="sqlite",
        SQLITE_PATH=str(tmp_path / "serve.db"),
        STATIC_ROOT=str(tmp_path / "static"),
    )
    env.update(extra)
    return env


def manage(env, *args, timeout=120):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=timeout
    )


# --- deploy settings (read at start-up, so each case is its own process) ----------------------------


@pytest.mark.backends("sqlite")
def test_check_deploy_reports_nothing_with_a_production_configuration(tmp_path):
    result = manage(production_env(tmp_path, **HTTPS_ON), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.backends("sqlite")
def test_check_deploy_names_each_https_setting_left_off(tmp_path):
    result = manage(production_env(tmp_path), "check", "--deploy")
    warnings = sorted(set(re.findall(r"\(security\.(W\d+)\)", result.stderr)))
    # HSTS, SSL redirect, secure session cookie, secure CSRF cookie: exactly the four left off.
    assert warnings == ["W004", "W008", "W012", "W016"], result.stderr


SHOW = "from django.conf import settings as s; print(repr(getattr(s, 'SECURE_PROXY_SSL_HEADER', None)), s.SESSION_COOKIE_AGE)"


@pytest.mark.backends("sqlite")
def test_proxy_ssl_header_is_read_only_with_trusted_proxies(tmp_path):
    refused = manage(production_env(tmp_path, SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto"), "check")
    assert refused.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER: needs TRUSTED_PROXIES (the proxies that set it)" in refused.stderr
    accepted = manage(
        production_env(
            tmp_path,
            SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
            TRUSTED_PROXIES="10.0.0.0/8",
            SESSION_COOKIE_AGE="3600",
        ),
        "shell",
        "-v",
        "0",
        "-c",
        SHOW,
    )
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.split() == ["('HTTP_X_FORWARDED_PROTO',", "'https')", "3600"]
    default = manage(production_env(tmp_path), "shell", "-v", "0", "-c", SHOW)
    assert default.stdout.split() == ["None", str(12 * 3600)]


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("SECURE_HSTS_SECONDS", "a year", "SECURE_HSTS_SECONDS: expected a whole number, got 'a year'"),
        ("SECURE_SSL_REDIRECT", "sure", "SECURE_SSL_REDIRECT: expected true/false, got 'sure'"),
        ("SESSION_COOKIE_AGE", "5", "SESSION_COOKIE_AGE: must be at least 60, got 5"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT: unknown value 'xml' (expected plain or json)"),
        (
            "SECURE_PROXY_SSL_HEADER",
            "X-Proto: https",
            "SECURE_PROXY_SSL_HEADER: expected a header name, got 'X-Proto: https'",
        ),
    ],
)
def test_a_bad_deploy_variable_stops_start_up_naming_it(tmp_path, variable, value, message):
    result = manage(production_env(tmp_path, TRUSTED_PROXIES="10.0.0.1", **{variable: value}), "check")
    assert result.returncode != 0
    assert message in result.stderr


# --- request ids, failures, database outages (in process) -------------------------------------------


def boom(request):
    raise RuntimeError("the view broke")


def database_gone(request):
    raise db.OperationalError("connection refused")


def unhealthy(request):
    return HttpResponse("down", status=503)  # returned, not raised, as /health/ does


urlpatterns = [path("boom/", boom), path("db-gone/", database_gone), path("unhealthy/", unhealthy)]
handler500 = "operations.requestlog.server_error"


@pytest.fixture
def request_log():
    """What the console handler would print for django.request, one JSON object per line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


@pytest.mark.django_db
def test_every_response_carries_a_fresh_request_id(client):
    first = client.get("/health/")["X-Request-ID"]
    second = client.get("/admin/login/")["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second


@pytest.mark.django_db
def test_a_proxys_request_id_is_kept_only_from_a_trusted_proxy(client, settings):
    settings.TRUSTED_PROXIES = ["10.1.2.3"]
    from_client = client.get("/health/", HTTP_X_REQUEST_ID="chosen-by-client", REMOTE_ADDR="203.0.113.9")
    assert from_client["X-Request-ID"] != "chosen-by-client"
    from_proxy = client.get("/health/", HTTP_X_REQUEST_ID="lb-7f3a.42", REMOTE_ADDR="10.1.2.3")
    assert from_proxy["X-Request-ID"] == "lb-7f3a.42"
    garbage = client.get("/health/", HTTP_X_REQUEST_ID="x\r\nSet-Cookie: a=b", REMOTE_ADDR="10.1.2.3")
    assert re.fullmatch(r"[0-9a-f]{32}", garbage["X-Request-ID"])


@pytest.mark.django_db
def test_the_request_id_is_in_the_audit_entry_of_a_sign_in(client, make_org, make_user):
    from security.models import AuditLog

    org = make_org("Serving")
    make_user(org, email="ops@serving.test", password="A-long-enough-passphrase-1", is_staff=True)
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "ops@serving.test", "password": "A-long-enough-passphrase-1"}
    )
    assert response.status_code == 302
    entry = AuditLog.all_orgs.get(legacy_action="login", object_repr="ops@serving.test")
    assert entry.request_id == response["X-Request-ID"]


@pytest.mark.urls(__name__)
def test_a_500_is_logged_with_the_request_id_of_its_response(client, request_log):
    client.raise_request_exception = False
    response = client.get("/boom/")
    request_id = response["X-Request-ID"]
    assert response.status_code == 500
    assert f"Request id: <code>{request_id}</code>" in response.content.decode()
    [record] = request_log()
    assert (record["level"], record["status"], record["path"], record["request_id"]) == (
        "ERROR",
        500,
        "/boom/",
        request_id,
    )
    assert "RuntimeError: the view broke" in record["exception"]


@pytest.mark.urls(__name__)
def test_an_unreachable_database_answers_503_with_retry_after(client, request_log):
    client.raise_request_exception = False
    response = client.get("/db-gone/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "the database is not answering" in response.content.decode()
    [record] = request_log()
    assert (record["status"], record["request_id"]) == (503, response["X-Request-ID"])
    assert "OperationalError: connection refused" in record["exception"]


@pytest.mark.urls(__name__)
def test_an_error_response_a_view_returns_is_logged_with_its_request_id(client, request_log):
    # Django logs it after the middleware returned, outside the request's context.
    response = client.get("/unhealthy/")
    [record] = request_log()
    assert (record["status"], record["message"], record["request_id"]) == (
        503,
        "Service Unavailable: /unhealthy/",
        response["X-Request-ID"],
    )


def test_plain_log_lines_carry_the_request_id():
    from django.conf import settings

    record = logging.LogRecord("agentforge.test", logging.INFO, __file__, 1, "hello", None, None)
    RequestIdFilter().filter(record)
    line = logging.Formatter(settings.LOGGING["formatters"]["plain"]["format"]).format(record)
    assert line.endswith(" INFO agentforge.test [-] hello")


# --- the production server, started for real --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command, env, log_path):
    log = open(log_path, "wb")
    return subprocess.Popen(
        command, cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_health(base, process, log_path, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, Path(log_path).read_text()[-3000:]
        try:
            with urllib.request.urlopen(base + "/health/", timeout=2) as response:
                return response.status
        except OSError:
            time.sleep(0.3)
    raise AssertionError("no answer from /health/:\n" + Path(log_path).read_text()[-3000:])


def sign_in(base, next_path="/admin/"):
    """Sign in as the test admin through the login form; return the signed-in opener and the
    response (at ``next_path``)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    login_page = opener.open(base + "/admin/login/", timeout=30).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token,
            "username": "root@serve.test",
            "password": "Serve-test-passphrase-9",
            "next": next_path,
        }
    ).encode()
    request = urllib.request.Request(
        base + f"/admin/login/?next={next_path}", data=form, headers={"Referer": base + "/admin/login/"}
    )
    return opener, opener.open(request, timeout=30)


def sign_in_and_fetch_users(base) -> tuple[str, str]:
    """Sign in through the login form; return the users changelist's HTML and its first stylesheet's URL."""
    _, response = sign_in(base, "/admin/accounts/user/")
    with response:
        assert response.url.endswith("/admin/accounts/user/"), response.url
        html = response.read().decode()
    stylesheet = re.search(r'<link rel="stylesheet" href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', html)
    assert stylesheet, html[:2000]
    return html, stylesheet.group(1)


def assert_styled_admin(base):
    html, stylesheet = sign_in_and_fetch_users(base)
    assert "root@serve.test" in html  # the changelist itself, signed in
    with urllib.request.urlopen(
        urllib.request.Request(base + stylesheet, headers={"Accept-Encoding": "gzip"}), timeout=10
    ) as css:
        assert css.status == 200
        assert css.headers["Content-Type"].startswith("text/css")
        assert css.headers["Content-Encoding"] == "gzip"
        assert "immutable" in css.headers["Cache-Control"]


CREATE_ADMIN = (
    "from accounts.models import Organization, User\n"
    "org = Organization.get_default()\n"
    "User.all_orgs.create_superuser('root@serve.test', 'Serve-test-passphrase-9', org=org)\n"
)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """A SQLite database migrated by the entry script (as docker-compose's one-shot service does), with an admin."""
    tmp_path = tmp_path_factory.mktemp("served")
    env = production_env(tmp_path, DB_WAIT_SECONDS="20")
    migrate = subprocess.run(
        ["scripts/docker-entrypoint", "migrate"], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "Applying accounts.0001_initial... OK" in migrate.stdout
    created = manage(env, "shell", "-c", CREATE_ADMIN)
    assert created.returncode == 0, created.stderr
    return tmp_path, env


def serve_and_browse(command, env, port, log_path, workers) -> str:
    """Start the server, sign in and fetch a styled admin page and its stylesheet, stop it; return its log."""
    server = start(command, env, log_path)
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for_health(base, server, log_path) == 200
        assert_styled_admin(base)
        deadline = time.monotonic() + 20
        while log_path.read_text().count("Booting worker with pid") < workers and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop(server)
    log = log_path.read_text()
    assert log.count("Booting worker with pid") == workers, log[-3000:]
    return log


@pytest.mark.backends("sqlite")
def test_the_entry_script_serves_a_styled_admin(migrated):
    tmp_path, env = migrated
    port = free_port()
    # As in the image: static files collected beforehand, not again at start (COLLECTSTATIC=false).
    env = {
        **env,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "WEB_THREADS": "2",
        "LOG_FORMAT": "json",
        "STATIC_ROOT": str(tmp_path / "image-static"),
        "COLLECTSTATIC": "false",
    }
    assert manage(env, "collectstatic", "--noinput", "--verbosity", "0").returncode == 0
    manifest = tmp_path / "image-static" / "staticfiles.json"
    collected = manifest.stat().st_mtime_ns
    log = serve_and_browse(["scripts/docker-entrypoint"], env, port, tmp_path / "entry.log", workers=1)
    assert manifest.stat().st_mtime_ns == collected
    assert "Using worker: gthread" in log
    assert re.search(r'"GET /admin/accounts/user/ HTTP/1.1" 200 \d+ \d+ms request_id=[0-9a-f]{32}', log), log[-3000:]


@pytest.mark.backends("sqlite")
def test_the_entry_script_gives_up_on_an_unreachable_database_naming_it(tmp_path):
    closed = free_port()
    env = production_env(
        tmp_path,
        DB_TYPE="postgresql",
        DB_HOST="127.0.0.1",
        DB_PORT=str(closed),
        DB_NAME="agentforge",
        DB_USER="agentforge",
        DB_WAIT_SECONDS="2",
    )
    started = time.monotonic()
    result = subprocess.run(
        ["scripts/docker-entrypoint"], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.startswith("database not reachable after 2 s: ")
    assert f"cannot connect to postgresql database 'agentforge' at 127.0.0.1:{closed}" in result.stderr
    assert "Connection refused" in result.stderr
    assert result.stderr.count("\n") == 1  # one line, the last error
    assert time.monotonic() - started < 60


@pytest.mark.backends("sqlite")
def test_scripts_serve_starts_the_workers_asked_for(migrated):
    tmp_path, env = migrated
    port = free_port()
    # From a .env file, as an operator would write them (gunicorn reads the same file as the settings).
    env_file = tmp_path / "serve.env"
    env_file.write_text(f"BIND=127.0.0.1:{port}\nWEB_CONCURRENCY=3\nWEB_THREADS=2\n")
    static_root = tmp_path / "serve-static"
    serve_and_browse(
        ["scripts/serve"],
        {**env, "ENV_FILE": str(env_file), "STATIC_ROOT": str(static_root)},
        port,
        tmp_path / "serve.log",
        workers=3,
    )
    assert (static_root / "staticfiles.json").is_file()  # scripts/serve collected them before serving
