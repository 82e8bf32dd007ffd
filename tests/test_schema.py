"""The schema: every table and index, embeddings, per-organization email,
legacy ids, and reversible migrations, checked against the live database."""

from __future__ import annotations

import math
import random
import struct
import uuid
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from accounts.models import Organization, User
from agentforge_agents.models import Tool
from agentforge_core.models import LEGACY_NAMESPACE, legacy_uuid
from agentforge_core.tenancy import org_scope
from knowledge.models import Document, DocumentChunk
from knowledge.vectors import semantic_search

# The issue's tables and the app each belongs to.
ISSUE_TABLES = {
    "users": "accounts",
    "user_sessions": "accounts",
    "mfa_settings": "accounts",
    "password_history": "accounts",
    "roles": "accounts",
    "permissions": "accounts",
    "role_permissions": "accounts",
    "user_roles": "accounts",
    "organizations": "accounts",
    "departments": "accounts",
    "groups": "accounts",
    "agents": "agents",
    "agent_versions": "agents",
    "agent_tools": "agents",
    "tools": "agents",
    "tool_permissions": "agents",
    "documents": "knowledge",
    "document_chunks": "knowledge",
    "conversations": "conversations",
    "messages": "conversations",
    "attachments": "conversations",
    "audit_logs": "security",
    "security_events": "security",
    "oauth_configs": "security",
    "ldap_configs": "security",
    "api_keys": "security",
    "system_settings": "settings_app",
    "org_settings": "settings_app",
    "user_preferences": "settings_app",
}


def _indexes(table):
    """Column lists of the table's indexes and unique constraints (not primary keys)."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {
        name: list(info["columns"])
        for name, info in constraints.items()
        if (info["index"] or info["unique"]) and not info["primary_key"] and info["columns"]
    }


def _tenant_models():
    return [m for m in apps.get_models() if any(f.name == "org" and f.is_relation for f in m._meta.concrete_fields)]


@pytest.mark.django_db
def test_every_table_of_the_issue_exists_in_its_app():
    tables = set(connection.introspection.table_names())
    missing = sorted(set(ISSUE_TABLES) - tables)
    assert missing == []
    owners = {m._meta.db_table: m._meta.app_label for m in apps.get_models()}
    assert {table: owners.get(table) for table in ISSUE_TABLES} == ISSUE_TABLES


@pytest.mark.django_db
@pytest.mark.parametrize(
    "table, columns",
    [
        ("users", ["email"]),
        ("users", ["org_id", "email"]),
        ("audit_logs", ["user_id", "created_at"]),
        ("messages", ["conversation_id", "created_at"]),
    ],
)
def test_the_guides_indexes_exist(table, columns):
    assert columns in _indexes(table).values(), _indexes(table)


@pytest.mark.django_db
def test_document_chunks_have_an_index_leading_with_tool_id():
    leading = [cols for cols in _indexes("document_chunks").values() if cols[0] == "tool_id" and len(cols) > 1]
    assert leading, _indexes("document_chunks")


@pytest.mark.django_db
@pytest.mark.parametrize("model", _tenant_models(), ids=lambda m: m._meta.label)
def test_every_tenant_table_has_an_index_leading_with_org_id(model):
    table = model._meta.db_table
    assert model._meta.get_field("org").column == "org_id"
    # Declared on the model (a foreign key's automatic index would satisfy the database
    # check on its own), and present in the database under that name.
    declared = [i.name for i in model._meta.indexes if i.fields and i.fields[0] in ("org", "org_id")]
    declared += [
        c.name for c in model._meta.constraints if getattr(c, "fields", None) and c.fields[0] in ("org", "org_id")
    ]
    assert declared, f"{model._meta.label}: no index or unique constraint leading with org"
    indexes = _indexes(table)
    for name in declared:
        assert indexes.get(name, [None])[0] == "org_id", (name, indexes)


# Redundant on PostgreSQL and MariaDB only, where the composite (org_id, id) key duplicates it;
# SQLite has no composite keys and walks each organization's audit chain by this index.
DUPLICATED_BY_THE_COMPOSITE_KEY = {"audit_logs_org_id_idx"}


def _project_tables():
    """The tables of this project's apps (not Django's or django-auditlog's)."""
    from django.conf import settings

    ours = [c for c in apps.get_app_configs() if Path(c.path).parent == settings.BASE_DIR]
    return sorted({m._meta.db_table for c in ours for m in c.get_models() if m._meta.managed})


@pytest.mark.django_db
@pytest.mark.parametrize("table", _project_tables())
def test_no_index_is_redundant(table):
    """Every index costs every write: none may only repeat the lookups of another, which the
    other serves as well (its columns leading the other's, or a unique key of the same ones)."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    indexes = {
        name: (tuple(info["columns"]), info["unique"] or info["primary_key"])
        for name, info in constraints.items()
        if (info["index"] or info["unique"] or info["primary_key"]) and info["columns"] and not info["foreign_key"]
    }
    redundant = []
    for name, (columns, unique) in indexes.items():
        if unique or (name in DUPLICATED_BY_THE_COMPOSITE_KEY and connection.vendor != "sqlite"):
            continue
        for other, (other_columns, other_unique) in indexes.items():
            if other != name and other_columns[: len(columns)] == columns:
                if len(other_columns) > len(columns) or other_unique or other < name:
                    redundant.append(f"{name} {columns} repeats {other} {other_columns}")
                    break
    if connection.vendor == "postgresql":  # Django's varchar_pattern_ops copies: LIKE 'x%' only
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef LIKE '%%pattern_ops%%'", [table]
            )
            redundant += [f"{name}: a pattern_ops copy" for (name,) in cursor.fetchall()]
    assert redundant == []


# --- embeddings ----------------------------------------------------------------------------


def _float32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


@pytest.mark.django_db
def test_embeddings_round_trip_exactly_in_float32(make_org):
    rng = random.Random(3)
    vector = [_float32(rng.uniform(-1, 1)) for _ in range(1536)]
    vector += [0.0, -0.0, 1.0, -1.0, 3.4028234663852886e38, 1.401298464324817e-45, _float32(math.pi)]
    org = make_org()
    with org_scope(org):
        chunk = DocumentChunk(chunk_id="0", text="t")
        chunk.set_embedding(vector, model="test-embedding")
        chunk.save()
        stored = DocumentChunk.objects.get(pk=chunk.pk)
    assert stored.embedding_dim == len(vector)
    assert stored.embedding_model == "test-embedding"
    assert bytes(stored.embedding) == struct.pack(f"<{len(vector)}f", *vector)
    got = stored.get_embedding()
    assert got == vector
    assert math.copysign(1.0, got[1537]) == -1.0  # -0.0 kept its sign
    assert DocumentChunk(chunk_id="x").get_embedding() is None


@pytest.mark.django_db
def test_semantic_search_orders_by_cosine_within_the_organization(make_org):
    mine, other = make_org(), make_org()
    vectors = {"same": [2, 0, 0], "close": [1, 0.2, 0], "orthogonal": [0, 1, 0], "opposite": [-1, 0, 0]}
    with org_scope(other):
        decoy = DocumentChunk(chunk_id="decoy")
        decoy.set_embedding([1, 0, 0])
        decoy.save()
    with org_scope(mine):
        tool = Tool.objects.create(name="kb", type=Tool.Type.KNOWLEDGE)
        doc = Document.objects.create(title="d", tool=tool)
        for name, vector in vectors.items():
            chunk = DocumentChunk(chunk_id=name, document=doc, tool=tool)
            chunk.set_embedding(vector)
            chunk.save()
        other_dim = DocumentChunk(chunk_id="4d")
        other_dim.set_embedding([1, 0, 0, 0], model="another model")
        other_dim.save()
        DocumentChunk.objects.create(chunk_id="no embedding")
        ranked = semantic_search([1, 0, 0], limit=10)
        top2 = semantic_search([1, 0, 0], limit=2, tool=tool)
    assert [h.chunk.chunk_id for h in ranked] == ["same", "close", "orthogonal", "opposite"]
    assert [round(h.score, 6) for h in ranked] == [1.0, round(1 / math.sqrt(1.04), 6), 0.0, -1.0]
    assert [h.chunk.chunk_id for h in top2] == ["same", "close"]


# --- users: unique email per organization, login by email ------------------------------------


@pytest.mark.django_db
def test_email_is_unique_per_organization_case_insensitively(make_org, make_user):
    a, b = make_org(), make_org()
    make_user(a, email="Alice@Example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_user(a, email="alice@EXAMPLE.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_user(a, email="  ALICE@example.com ")
    in_b = make_user(b, email="alice@example.com")  # another organization: fine
    assert in_b.email_normalized == "alice@example.com"
    assert User.all_orgs.by_email("ALICE@example.COM").count() == 2
    assert User.all_orgs.for_org(a).by_email("alice@example.com").get().email == "Alice@Example.com"


@pytest.mark.django_db
def test_login_by_email(make_org, make_user):
    org = make_org()
    user = make_user(org, email="Login.Person@Example.com", password="a long enough passphrase 42")
    assert authenticate(None, email="login.person@example.com", password="a long enough passphrase 42") == user
    assert authenticate(None, username="LOGIN.PERSON@example.com", password="a long enough passphrase 42") == user
    assert authenticate(None, email="login.person@example.com", password="wrong") is None
    assert authenticate(None, email="nobody@example.com", password="a long enough passphrase 42") is None


# --- legacy ids ----------------------------------------------------------------------------


def test_legacy_id_mapping_is_deterministic():
    first = legacy_uuid("organizations", "org_default")
    assert first == legacy_uuid("organizations", "org_default")
    assert first == uuid.uuid5(LEGACY_NAMESPACE, "organizations:org_default")
    assert first.version == 5
    # Per table: the same legacy id in two tables gives two keys.
    assert legacy_uuid("roles", "role_admin") != legacy_uuid("groups", "role_admin")
    # A legacy id that already is a UUID is kept, whatever its spelling.
    existing = uuid.uuid4()
    assert legacy_uuid("users", str(existing)) == existing
    assert legacy_uuid("users", str(existing).upper()) == existing


@pytest.mark.django_db
def test_default_organization_gets_its_legacy_key():
    org = Organization.get_default()
    assert org.pk == legacy_uuid("organizations", "org_default")
    assert org.legacy_id == "org_default"
    assert Organization.get_default() == org
    assert Organization.all_orgs.count() == 1


# --- migrations ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_one_app_and_then_every_app_migrate_to_zero_and_back():
    # One app alone first (the others' tables stay), then accounts, which holds the user model:
    # unapplying it unapplies every app of the project. One test: each round trip costs tens
    # of seconds on the server backends.
    try:
        call_command("migrate", "knowledge", "zero", verbosity=0)
        tables = set(connection.introspection.table_names())
        assert not {"documents", "document_chunks"} & tables
        assert {"agents", "users", "conversations"} <= tables
        call_command("migrate", "accounts", "zero", verbosity=0)
        assert not set(ISSUE_TABLES) & set(connection.introspection.table_names())
    finally:
        call_command("migrate", verbosity=0)
    assert set(ISSUE_TABLES) <= set(connection.introspection.table_names())
    assert "doc_chunks_tool_doc_idx" in _indexes("document_chunks")
    org = Organization.all_orgs.create(name="After", slug="after")
    with org_scope(org):
        assert Tool.objects.create(name="t", type=Tool.Type.API).org_id == org.pk
