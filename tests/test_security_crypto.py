"""Encryption at rest: no plaintext in any secret column, rotation, wrong keys, empty values."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from agentforge_core import crypto
from agentforge_core.fields import encrypted_fields
from agentforge_core.tenancy import unscoped
from security.rotation import encrypted_models

# Every secret column the schema holds (docs/legacy-format.md §9), with its scheme.
EXPECTED = {
    ("organizations", "google_client_secret"): "fernet",
    ("organizations", "microsoft_client_secret"): "fernet",
    ("oauth_configs", "client_secret"): "fernet",
    ("ldap_configs", "bind_password"): "fernet",
    ("mfa_settings", "totp_secret"): "fernet",
    ("tools", "credentials"): "fernet",
    ("system_settings", "secret_value"): "aesgcm",
    ("org_settings", "secret_value"): "aesgcm",
    ("legacy_records", "secret"): "fernet",
}

SECRETS = {
    "google": "GOCSPX-google-secret-value",
    "microsoft": "ms~client~secret~value",
    "oauth": "oauth-client-secret-123",
    "ldap": "ldap-bind-pa55word",
    "totp": "JBSWY3DPEHPK3PXPJBSWY3DP",
    "tool_api_key": "sk-proj-tool-api-key-9876",
    "smtp": "smtp-app-password-xyz",
    "llm": "sk-openai-system-llm-key",
    "org_llm": "sk-anthropic-org-key-42",
    "invitation": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
}


def make_secrets(make_org, make_user):
    from accounts.models import MFASettings
    from agentforge_agents.models import Tool
    from security.models import LDAPConfig, OAuthConfig
    from settings_app.models import OrgSetting, SystemSetting

    org = make_org(google_client_secret=SECRETS["google"], microsoft_client_secret=SECRETS["microsoft"])
    user = make_user(org)
    OAuthConfig.all_orgs.create(org=org, provider="google", client_id="cid", client_secret=SECRETS["oauth"])
    LDAPConfig.all_orgs.create(org=org, bind_password=SECRETS["ldap"])
    MFASettings.all_orgs.create(org=org, user=user, totp_secret=SECRETS["totp"])
    Tool.all_orgs.create(
        org=org,
        type="email",
        name="Mailer",
        credentials={"config.api_key": SECRETS["tool_api_key"], "config.smtp_pass": SECRETS["smtp"]},
    )
    system = SystemSetting(key="openai_api_key")
    system.set_value(SECRETS["llm"], secret=True)
    system.save()
    org_setting = OrgSetting(org=org, key="llm.api_key")
    org_setting.set_value(SECRETS["org_llm"], secret=True)
    org_setting.save()
    from legacy.models import LegacyRecord

    LegacyRecord.all_orgs.create(
        org=org,
        collection="security/invitations",
        legacy_id="inv-1",
        data={"token": None},
        secret=SECRETS["invitation"],
    )
    return org


def raw_values(table, column):
    qn = connection.ops.quote_name
    with unscoped(), connection.cursor() as cursor:
        cursor.execute(f"SELECT {qn(column)} FROM {qn(table)} WHERE {qn(column)} IS NOT NULL")
        return [row[0] for row in cursor.fetchall()]


def all_raw():
    return {
        (m._meta.db_table, f.column): raw_values(m._meta.db_table, f.column)
        for m in encrypted_models()
        for f in encrypted_fields(m)
    }


def read_back(org):
    from accounts.models import MFASettings, Organization
    from agentforge_agents.models import Tool
    from legacy.models import LegacyRecord
    from security.models import LDAPConfig, OAuthConfig
    from settings_app.models import OrgSetting, SystemSetting

    org = Organization.all_orgs.get(pk=org.pk)
    tool = Tool.all_orgs.get(org=org)
    return {
        "google": org.google_client_secret,
        "microsoft": org.microsoft_client_secret,
        "oauth": OAuthConfig.all_orgs.get(org=org).client_secret,
        "ldap": LDAPConfig.all_orgs.get(org=org).bind_password,
        "totp": MFASettings.all_orgs.get(org=org).totp_secret,
        "tool_api_key": tool.credentials["config.api_key"],
        "smtp": tool.credentials["config.smtp_pass"],
        "llm": SystemSetting.objects.get(key="openai_api_key").get_value(),
        "org_llm": OrgSetting.all_orgs.get(org=org, key="llm.api_key").get_value(),
        "invitation": LegacyRecord.all_orgs.get(org=org, legacy_id="inv-1").secret,
    }


def test_every_secret_column_is_encrypted():
    found = {(m._meta.db_table, f.column): f.scheme for m in encrypted_models() for f in encrypted_fields(m)}
    assert found == EXPECTED


@pytest.mark.django_db
def test_raw_sql_shows_no_plaintext(make_org, make_user):
    org = make_secrets(make_org, make_user)
    raw = all_raw()
    for (table, column), scheme in EXPECTED.items():
        values = raw[(table, column)]
        assert values, f"{table}.{column} holds nothing"
        for value in values:
            assert value.startswith(f"{scheme}$"), (table, column, value[:20])
            for secret in SECRETS.values():
                assert secret not in value
                assert secret[:8] not in value
    # The audit trail holds none either.
    for value in raw_values("audit_logs", "changes") + raw_values("audit_logs", "object_repr"):
        assert not any(secret in str(value) for secret in SECRETS.values())
    assert read_back(org) == SECRETS


@pytest.mark.django_db
def test_empty_strings_stay_empty_and_none_stays_none(make_org):
    from accounts.models import Organization

    org = make_org(google_client_secret="", microsoft_client_secret=None)
    assert raw_values("organizations", "google_client_secret") == [""]
    org = Organization.all_orgs.get(pk=org.pk)
    assert org.google_client_secret == "" and org.microsoft_client_secret is None


@pytest.mark.django_db
def test_rotation_two_keys_then_one_loses_nothing(make_org, make_user):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old_id = crypto.parse_key_list(old)[0].key_id
    new_id = crypto.parse_key_list(new)[0].key_id
    with override_settings(ENCRYPTION_KEY=old):
        org = make_secrets(make_org, make_user)
        assert {crypto.key_id_of(v) for vs in all_raw().values() for v in vs if v} == {old_id}
    with override_settings(ENCRYPTION_KEY=f"{new},{old}"):
        assert read_back(org) == SECRETS  # old values still readable
        out = io.StringIO()
        call_command("rotate_encryption_key", "--dry-run", stdout=out)
        assert "would re-encrypt 9 value(s)" in out.getvalue()  # the invitation token too
        assert {crypto.key_id_of(v) for vs in all_raw().values() for v in vs if v} == {old_id}
        out = io.StringIO()
        call_command("rotate_encryption_key", "--batch-size", "1", stdout=out)
        assert "re-encrypted 9 value(s)" in out.getvalue()
        assert "tools" in out.getvalue() and "org_settings" in out.getvalue()
        assert {crypto.key_id_of(v) for vs in all_raw().values() for v in vs if v} == {new_id}
        out = io.StringIO()
        call_command("rotate_encryption_key", stdout=out)  # re-run: nothing left
        assert "re-encrypted 0 value(s)" in out.getvalue()
    with override_settings(ENCRYPTION_KEY=new):
        assert read_back(org) == SECRETS
        for (table, column), scheme in EXPECTED.items():
            assert all(v.startswith(f"{scheme}${new_id}$") for v in raw_values(table, column))


@pytest.mark.django_db
def test_wrong_key_fails_loudly_naming_the_field(make_org, make_user):
    from agentforge_agents.models import Tool

    org = make_secrets(make_org, make_user)
    with override_settings(ENCRYPTION_KEY=Fernet.generate_key().decode()):
        with pytest.raises(
            crypto.DecryptionError,
            match=r"tools\.credentials: encrypted with key \w{8}, which is not in ENCRYPTION_KEY",
        ):
            Tool.all_orgs.get(org=org)
        from settings_app.models import OrgSetting

        with pytest.raises(crypto.DecryptionError, match=r"org_settings\.secret_value"):
            OrgSetting.all_orgs.get(org=org, key="llm.api_key")
        # Rotation refuses too, and says which values.
        err = io.StringIO()
        with pytest.raises(Exception, match="could not be decrypted"):
            call_command("rotate_encryption_key", stdout=io.StringIO(), stderr=err)
        assert "tools.credentials" in err.getvalue()


def test_tampered_ciphertext_fails_loudly():
    for scheme in crypto.SCHEMES:
        value = crypto.encrypt("secret", scheme)
        assert crypto.decrypt(value, "t.c") == "secret"
        tampered = value[:-6] + ("AAAAAA" if not value.endswith("AAAAAA") else "BBBBBB")
        with pytest.raises(crypto.DecryptionError, match=r"t\.c: cannot decrypt"):
            crypto.decrypt(tampered, "t.c")


@pytest.mark.django_db
def test_plaintext_written_around_the_orm_is_refused_then_encrypted_by_rotation(make_org):
    from accounts.models import Organization

    org = make_org()
    qn = connection.ops.quote_name
    with unscoped(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {qn('organizations')} SET {qn('google_client_secret')} = %s WHERE {qn('id')} = %s",
            ["plain-secret", org.pk.hex if connection.vendor in ("mysql", "sqlite") else org.pk],
        )
    with pytest.raises(
        crypto.DecryptionError, match="organizations.google_client_secret: stored value is not encrypted"
    ):
        Organization.all_orgs.get(pk=org.pk)
    out = io.StringIO()
    call_command("rotate_encryption_key", stdout=out)
    assert Organization.all_orgs.get(pk=org.pk).google_client_secret == "plain-secret"
    assert raw_values("organizations", "google_client_secret")[0].startswith("fernet$")


def test_key_list_errors_name_the_variable():
    from agentforge_site.dbconfig import ConfigurationError

    with pytest.raises(ConfigurationError, match="ENCRYPTION_KEY"):
        crypto.parse_key_list("not-a-key")
    with pytest.raises(ConfigurationError, match="key #2"):
        crypto.parse_key_list(Fernet.generate_key().decode() + ",short")
