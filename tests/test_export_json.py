"""export_json: the legacy layout back, record by record; import → export → import is stable."""

from __future__ import annotations

import json

import pytest

from legacy.format.mappers import registry
from tests import legacy_corpus as C
from tests.legacy_helpers import SAMPLE, dump, load_dir, rolled_back, run_export, run_import

pytestmark = pytest.mark.django_db

# The documented normalisations (docs/import.md): plaintext one-time secrets are stored
# only as SHA-256, so they come back as null.
NULLED = {"verification_token", "reset_password_token"}


def _normalise(relative, data):
    if relative == "security/users.json":
        for user in data.values():
            for key in ("verification_token", "reset_password_token"):
                user[key] = None
            if "mfa" in user:
                user["mfa"]["email_code"] = user["mfa"]["sms_code"] = None
    if relative == "conversations.json":
        data = {record["id"]: record for record in data.values()}  # the inner id is authoritative
    return data


def _compare(original: dict, exported: dict):
    for relative, data in original.items():
        assert relative in exported, f"{relative} not exported"
        expected = _normalise(relative, data)
        got = exported[relative]
        if (
            isinstance(expected, dict)
            and relative != "security/settings.json"
            and not relative.startswith(("settings", "integrations", "lab/"))
        ):
            assert set(got) == set(expected), relative
            for key in expected:
                assert got[key] == expected[key], f"{relative}: record {key}"
        else:
            assert got == expected, relative


def test_sample_export_matches_the_original_record_by_record(tmp_path):
    run_import(SAMPLE, verbosity=0)
    run_export(tmp_path / "out")
    _compare(load_dir(SAMPLE), load_dir(tmp_path / "out"))


def test_export_formatting_is_legacy(tmp_path):
    root = tmp_path / "corpus"
    C.write_corpus(root)
    run_import(root, verbosity=0)
    out = tmp_path / "out"
    run_export(out)
    users = (out / "security/users.json").read_text(encoding="utf-8")
    assert users.startswith('{\n  "') and not users.endswith("\n") and "Ädmin" in users
    agents = (out / "agents.json").read_text(encoding="utf-8")
    assert "\\ud83e\\udd16" in agents and "\U0001f916" not in agents
    chunks = (out / "chunks_index.json").read_text(encoding="utf-8")
    assert "\n" not in chunks and chunks.startswith('[{"')
    audit = json.loads((out / "security/audit_logs.json").read_text())
    assert [a["timestamp"] for a in audit] == sorted(a["timestamp"] for a in audit)
    assert audit[-1]["timestamp"] == "2026-01-06T10:00:00"  # no fraction when microsecond is 0
    # secrets decrypted and merged back where they were
    tools = json.loads((out / "tools.json").read_text())
    assert tools[C.T_API]["api_config"]["auth_value"] == "sk-api-secret"
    assert tools[C.T_KB]["kb_config"]["embedding"]["api_key"] == "emb-secret"
    settings = json.loads((out / "settings.json").read_text())
    assert settings["llm"]["api_key"] == "sk-llm-secret" and settings["llm_providers"][0]["api_key"] == "sk-ant-secret"


def test_corpus_export_matches_record_by_record(tmp_path):
    root = tmp_path / "corpus"
    C.write_corpus(root)
    run_import(root, verbosity=0)
    run_export(tmp_path / "out")
    _compare(load_dir(root), load_dir(tmp_path / "out"))


def test_old_passwords_survive_export(tmp_path):
    root = tmp_path / "corpus"
    facts = C.write_corpus(root)
    run_import(root, verbosity=0)
    run_export(tmp_path / "out")
    users = json.loads((tmp_path / "out/security/users.json").read_text())
    for uid, plain in facts["passwords"].items():
        assert users[uid]["password_hash"] == facts["users"][uid]["password_hash"]
    assert users[C.U1]["password_hash"].count("$") == 1  # the 2-part form is kept


def test_import_export_import_gives_identical_rows(tmp_path):
    root = tmp_path / "corpus"
    C.write_corpus(root)
    with rolled_back():
        run_import(root, verbosity=0)
        first = dump(include_import_time=False)
        run_export(tmp_path / "out")
    run_import(tmp_path / "out", verbosity=0)
    second = dump(include_import_time=False)
    for table in first:
        assert second[table] == first[table], table


def test_single_record_api_round_trips():
    """The registry works on one record without an import context (the dual-write store)."""
    from accounts.models import User

    run_import(SAMPLE, verbosity=0)
    raw = json.loads((SAMPLE / "security/users.json").read_text())
    record = raw["85900a07-fe70-473b-99d2-795a46862009"]
    mapper = registry["security/users"]
    mapped = mapper.to_rows(record)
    assert [row.model.__name__ for row in mapped.rows] == ["User", "MFASettings", "UserPreference"]
    exported = mapper.to_legacy(User.all_orgs.get(legacy_id=record["id"]))
    assert {**exported, "verification_token": record["verification_token"]} == record


def test_single_record_write_mapped_updates_one_user():
    from accounts.models import User
    from legacy.migration.writer import write_mapped

    run_import(SAMPLE, verbosity=0)
    raw = json.loads((SAMPLE / "security/users.json").read_text())
    record = dict(raw["85900a07-fe70-473b-99d2-795a46862009"])
    record["profile"] = {**record["profile"], "first_name": "Renamed"}
    stats = write_mapped(registry["security/users"].to_rows(record))
    assert stats["users"].updated == 1 and stats["mfa_settings"].unchanged == 1
    assert User.all_orgs.get(legacy_id=record["id"]).first_name == "Renamed"
