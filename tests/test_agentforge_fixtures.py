"""The data AgentForge's own code wrote (tests/fixtures/agentforge) and the checks that stand in for it.

These tests need no database: they pin what the fixtures are, so the import, sign-in and rollback
tests built on them rest on known facts, and they prove the two stand-ins for AgentForge's code
(its model shapes and its password rule) against data AgentForge itself wrote.
"""

import base64
import copy
import json

import pytest

from tests.agentforge_real import (
    ERAS,
    agentforge_verify,
    credentials,
    data_dir_problems,
    fixture,
    record_problems,
    shapes,
    totp,
)

pytestmark = pytest.mark.once  # reads the fixture files, no database

SECURITY_DICTS = [
    "organizations",
    "users",
    "departments",
    "groups",
    "roles",
    "policies",
    "tool_permissions",
    "kb_permissions",
    "db_permissions",
    "ldap_configs",
    "oauth_configs",
    "invitations",
]


def users(name):
    return json.loads((fixture(name) / "security" / "users.json").read_text(encoding="utf-8"))


def by_email(name):
    return {user["email"]: user for user in users(name).values()}


@pytest.mark.parametrize("name", ERAS)
def test_every_file_is_json_keyed_by_the_records_own_id(name):
    for collection in SECURITY_DICTS:
        records = json.loads((fixture(name) / "security" / f"{collection}.json").read_text(encoding="utf-8"))
        assert all(key == record["id"] for key, record in records.items()), collection
    for path in fixture(name).rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ERAS)
def test_credentials_name_every_user_agentforge_wrote(name):
    assert set(credentials(name)["users"]) == set(by_email(name))


@pytest.mark.parametrize("name", ERAS)
def test_the_recorded_passwords_verify_with_agentforges_rule_and_earlier_ones_do_not(name):
    written = by_email(name)
    checked = 0
    for email, entry in credentials(name)["users"].items():
        if entry["password"] is None:
            assert written[email]["password_hash"] is None  # the Google user
            continue
        assert agentforge_verify(entry["password"], written[email]["password_hash"]), email
        assert not agentforge_verify(entry["password"] + "x", written[email]["password_hash"]), email
        for old in entry.get("previous_passwords", []):
            assert not agentforge_verify(old, written[email]["password_hash"]), email
        checked += 1
    assert checked == 11


@pytest.mark.parametrize("name", ERAS)
def test_password_history_holds_the_hash_of_the_changed_password(name):
    carol = by_email(name)["carol.creator@acme.example"]
    old = credentials(name)["users"]["carol.creator@acme.example"]["previous_passwords"]
    assert [agentforge_verify(old[0], h) for h in carol["password_history"]] == [True]


@pytest.mark.parametrize("name", ERAS)
def test_the_mfa_user_has_the_recorded_totp_secret_and_hashed_backup_codes(name):
    bob = by_email(name)["bob.builder@acme.example"]
    entry = credentials(name)["users"]["bob.builder@acme.example"]
    assert bob["mfa"]["enabled"] and bob["mfa"]["totp_verified"]
    assert bob["mfa"]["totp_secret"] == entry["totp_secret"]
    assert len(entry["backup_codes"]) == len(bob["mfa"]["backup_codes"]) == 10
    for code, stored in zip(entry["backup_codes"], bob["mfa"]["backup_codes"]):
        assert agentforge_verify(code, stored)


def test_totp_matches_the_rfc_6238_vectors():
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp(secret, at=59, digits=8) == "94287082"
    assert totp(secret, at=1111111109, digits=8) == "07081804"
    assert totp(secret, at=1111111109) == "081804"


@pytest.mark.parametrize("name", ERAS)
def test_agentforge_refused_exactly_the_pending_suspended_and_locked_users(name):
    refused = {
        email: (entry["agentforge_login"]["status"], entry["agentforge_login"]["detail"])
        for email, entry in credentials(name)["users"].items()
        if entry.get("agentforge_login") and entry["agentforge_login"]["status"] != 200
    }
    written = by_email(name)
    assert {email: written[email]["status"] for email in refused} == {
        "dave.welcome@acme.example": "pending",
        "erin.unverified@acme.example": "pending",
        "sam.suspended@acme.example": "suspended",
        "leo.locked@acme.example": "locked",
    }
    assert refused["erin.unverified@acme.example"] == (403, "Please verify your email first")
    assert refused["sam.suspended@acme.example"] == (403, "Account suspended. Contact administrator")
    # AgentForge's login does not look at "inactive": the deactivated user was let in
    assert written["zoe.zhang@acme.example"]["status"] == "inactive"
    assert credentials(name)["users"]["zoe.zhang@acme.example"]["agentforge_login"]["status"] == 200


@pytest.mark.parametrize("name", ERAS)
def test_agentforge_writes_null_tool_name_for_every_tool_permission(name):
    permissions = json.loads((fixture(name) / "security" / "tool_permissions.json").read_text(encoding="utf-8"))
    assert len(permissions) == 2
    assert [p["tool_name"] for p in permissions.values()] == [None, None]


@pytest.mark.parametrize("name, era", ERAS.items())
def test_every_record_agentforge_wrote_fits_its_models_shapes(name, era):
    assert data_dir_problems(fixture(name), era) == []


@pytest.mark.parametrize("era", ERAS.values())
def test_the_shape_check_rejects_what_agentforges_loader_rejects(era):
    described = shapes(era)
    models = described["models"]
    invitation = next(
        iter(
            json.loads(
                (fixture("first-57dc2c9") / "security" / "invitations.json").read_text(encoding="utf-8")
            ).values()
        )
    )
    broken = copy.deepcopy(invitation)
    broken["token"] = None  # what export_json wrote, and AgentForge's loader skipped
    assert record_problems(models["Invitation"], broken, models, "inv") == [
        "inv.token: null where AgentForge requires a value"
    ]
    del broken["token"], broken["invited_by"]
    assert record_problems(models["Invitation"], broken, models, "inv") == [
        "inv.invited_by: missing, AgentForge requires it"
    ]
    broken = copy.deepcopy(invitation)
    broken["role_ids"] = [None]
    assert record_problems(models["Invitation"], broken, models, "inv") == [
        "inv.role_ids[0]: null where AgentForge requires a value"
    ]


@pytest.mark.parametrize("era", ERAS.values())
def test_the_shape_check_takes_any_value_where_agentforge_declares_any(era):
    models = shapes(era)["models"]
    condition = {"attribute": "time.hour", "operator": "eq", "value": None}
    assert models["PolicyCondition"]["fields"]["value"]["type"] == "any"
    assert record_problems(models["PolicyCondition"], condition, models, "cond") == []
    assert record_problems(models["PolicyCondition"], dict(condition, operator=None), models, "cond") == [
        "cond.operator: null where AgentForge requires a value"
    ]


def test_both_eras_describe_every_file_and_the_late_fields():
    first, last = shapes("57dc2c9"), shapes("effb5d0")
    assert first["files"].keys() == last["files"].keys()
    user_first = first["models"]["User"]["fields"]
    user_last = last["models"]["User"]["fields"]
    assert set(user_last) - set(user_first) == {"has_admin_access", "has_enduser_access", "manager_id", "employee_id"}
    assert user_last["manager_id"]["nullable"] and not user_last["manager_id"]["required"]
    assert first["models"]["ToolPermission"]["fields"]["tool_name"] == {
        "nullable": True,
        "required": False,
        "type": "string",
    }
