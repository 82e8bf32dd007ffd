"""The admin console in a real browser: Playwright driving Debian's Chromium (headless).

Screenshots of the main pages go to tests/screenshots/ (or $ADMIN_SCREENSHOT_DIR); the
README shows copies kept in docs/screenshots/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("ADMIN_SCREENSHOT_DIR") or Path(__file__).resolve().parent / "screenshots")
PASSWORD = "Browser-test-passphrase-81"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, which Django's ORM guard
    # mistakes for async code; allow it for this module only.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    context.close()


@pytest.fixture
def world(settings, make_org, make_user):
    from tests.admin_support import grant_all_model_permissions, make_audit, populate

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins
    org = make_org("Acme")
    other = make_org("Globex")
    root = make_user(org, email="root@acme.test", password=PASSWORD, is_staff=True, is_superuser=True)
    orgadmin = make_user(org, email="admin@acme.test", password=PASSWORD, is_staff=True)
    grant_all_model_permissions(orgadmin)
    member = make_user(org, email="member@acme.test", first_name="Maria", last_name="Lopez")
    mine = populate(org, member)
    theirs = populate(other, make_user(other, email="member@globex.test"), suffix="-g")
    make_audit(org, actor=member, legacy_action="login_failed", success=False, remote_addr="203.0.113.9")
    for i in range(8):
        make_audit(
            org if i % 2 else other, actor=member if i % 2 else None, legacy_action="login", remote_addr=f"10.0.0.{i}"
        )
    return {"org": org, "other": other, "root": root, "orgadmin": orgadmin, "mine": mine, "theirs": theirs}


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def login(page, live_server, email):
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", email)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    assert "AgentForge DB" in page.inner_text("#site-name")


def test_login_and_filter_the_audit_log(page, live_server, world):
    login(page, live_server, "root@acme.test")
    shot(page, "index")
    page.goto(f"{live_server.url}/admin/security/auditlog/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() >= 9
    shot(page, "audit-log")
    # Filter by action through the sidebar filter.
    page.locator("#changelist-filter a", has_text="login_failed").first.click()
    page.wait_for_url(re.compile(r"action=login_failed"))
    assert page.locator("#result_list tbody tr").count() == 1
    assert "203.0.113.9" in page.inner_text("#result_list")
    # And by organization.
    page.goto(f"{live_server.url}/admin/security/auditlog/?org={world['other'].pk}&action=login")
    from security.models import AuditLog

    expected = AuditLog.all_orgs.filter(org=world["other"], legacy_action="login").count()
    assert expected >= 4
    assert page.locator("#result_list tbody tr").count() == expected
    assert "member@acme.test" not in page.inner_text("#result_list")
    # The detail page shows the entry read-only.
    page.locator("#result_list tbody tr th a").first.click()
    assert page.locator("input[name=_save]").count() == 0


def test_create_an_api_key_and_see_it_once(page, live_server, world):
    from security.models import APIKey

    login(page, live_server, "admin@acme.test")
    page.goto(f"{live_server.url}/admin/security/apikey/add/")
    page.fill("#id_name", "Deploy pipeline")
    page.click("input[name=_save]")
    page.wait_for_selector("#new-api-key-value")
    plaintext = page.inner_text("#new-api-key-value").strip()
    key = APIKey.all_orgs.get(name="Deploy pipeline")
    assert plaintext.startswith(key.prefix)
    assert key.org_id == world["org"].pk
    shot(page, "api-key-created")
    page.reload()
    assert page.locator("#new-api-key-value").count() == 0
    assert plaintext not in page.content()
    page.goto(f"{live_server.url}/admin/security/apikey/")
    assert plaintext not in page.content()
    assert key.prefix in page.inner_text("#result_list")
    shot(page, "api-keys")


def test_edit_a_masked_setting(page, live_server, world):
    from settings_app.models import OrgSetting
    from tests.admin_support import SECRET_MARKERS

    setting = world["mine"]["orgsetting"]
    login(page, live_server, "admin@acme.test")
    page.goto(f"{live_server.url}/admin/settings_app/orgsetting/{setting.pk}/change/")
    assert SECRET_MARKERS["setting"] not in page.content()
    assert page.input_value("#id_value_secret") == ""
    assert "•••••• (set)" in page.inner_text(".field-value_secret")
    # Only the secret input is shown for a secret setting.
    assert page.is_visible("#id_value_secret") and not page.is_visible("#id_value_integer")
    shot(page, "setting-secret")
    page.fill("#id_value_secret", "sk-rotated-in-browser")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist")
    assert OrgSetting.all_orgs.get(pk=setting.pk).get_value() == "sk-rotated-in-browser"
    # Switching the type shows the matching input.
    page.goto(f"{live_server.url}/admin/settings_app/orgsetting/{setting.pk}/change/")
    page.select_option("#id_value_type", "integer")
    assert page.is_visible("#id_value_integer") and not page.is_visible("#id_value_secret")
    page.fill("#id_value_integer", "42")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist")
    setting = OrgSetting.all_orgs.get(pk=setting.pk)
    assert (setting.value_type, setting.get_value(), setting.secret_value) == ("integer", 42, None)


def test_org_admin_is_blocked_from_another_orgs_object(page, live_server, world):
    login(page, live_server, "admin@acme.test")
    page.goto(f"{live_server.url}/admin/accounts/user/")
    assert "member@acme.test" in page.inner_text("#result_list")
    assert "member@globex.test" not in page.content()
    shot(page, "users")
    agent = world["theirs"]["agent"]
    response = page.goto(f"{live_server.url}/admin/agents/agent/{agent.pk}/change/")
    assert response.status in (403, 404)
    assert "Helper-g" not in page.content()
    response = page.goto(f"{live_server.url}/admin/agents/agent/")
    assert response.status == 200
    assert "Helper-g" not in page.content() and "Helper" in page.inner_text("#result_list")


def test_tool_credentials_and_transcript_pages(page, live_server, world):
    from tests.admin_support import SECRET_MARKERS

    login(page, live_server, "root@acme.test")
    page.goto(f"{live_server.url}/admin/agents/tool/{world['mine']['tool'].pk}/change/")
    assert "api_key" in page.inner_text("table.af-secret-json")
    for secret in SECRET_MARKERS.values():
        assert secret not in page.content()
    shot(page, "tool-credentials")
    page.goto(f"{live_server.url}/admin/conversations/conversation/{world['mine']['conversation'].pk}/change/")
    transcript = page.inner_text(".af-transcript")
    assert "Hello <b>agent</b>" in transcript  # escaped, shown as text
    shot(page, "conversation-transcript")


def test_admin_sign_in_asks_for_the_totp_code_and_a_backup_code_works_once(
    browser, live_server, make_org, make_user, settings
):
    from accounts import mfa
    from accounts.models import MFASettings
    from tests.agentforge_real import totp

    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]
    secret, backup = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "A1B2C3D4"
    org = make_org("Acme")
    user = make_user(org, email="mfa@acme.test", password=PASSWORD, is_staff=True, is_superuser=True)
    MFASettings.all_orgs.create(
        org=org,
        user=user,
        enabled=True,
        methods=["totp"],
        totp_secret=secret,
        totp_verified=True,
        backup_codes=[mfa.hash_backup_code(backup)],
    )

    def password_then_code(code):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15000)
        page.goto(f"{live_server.url}/admin/login/?next=/admin/")
        page.fill("#id_username", "mfa@acme.test")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_selector("#mfa-form")
        assert page.url == f"{live_server.url}/admin/mfa/"
        page.goto(f"{live_server.url}/admin/auth/")  # no admin page before the code
        page.wait_for_selector("#mfa-form")
        page.fill("#id_code", code)
        page.click("#mfa-form input[type=submit]")
        page.wait_for_load_state()
        return context, page

    context, page = password_then_code(totp(secret))
    page.wait_for_selector("#site-name")
    assert page.url == f"{live_server.url}/admin/"
    shot(page, "mfa-signed-in")
    context.close()

    context, page = password_then_code("a1b2-c3d4")
    page.wait_for_selector("#site-name")
    assert page.url == f"{live_server.url}/admin/"
    context.close()

    context, page = password_then_code(backup)
    page.wait_for_selector("#mfa-error")
    assert "Wrong code" in page.inner_text("#mfa-error")
    assert page.url == f"{live_server.url}/admin/mfa/"
    shot(page, "mfa-backup-code-used")
    context.close()
