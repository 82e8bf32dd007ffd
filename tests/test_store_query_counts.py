"""No N+1 in the store: reading a collection costs the same number of queries with the real
sample as with ten more records of each kind."""

from __future__ import annotations

import copy
import shutil
import uuid
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from legacy.store.db_store import DatabaseStore
from legacy.store.jsonfiles import DICT_COLLECTIONS

pytestmark = pytest.mark.django_db
MORE = 10


def _queries(func) -> int:
    with CaptureQueriesContext(connection) as captured:
        func()
    return len(captured.captured_queries)


def _copy(record: dict, i: int) -> dict:
    twin = copy.deepcopy(record)
    twin["id"] = str(uuid.uuid4())
    for key in ("email", "name", "username", "slug"):
        if isinstance(twin.get(key), str):
            twin[key] = f"copy{i}-{twin[key]}"
    return twin


# Data written by AgentForge's own code: agents, tools, documents and conversations too.
AGENTFORGE_DATA = Path(__file__).resolve().parent / "fixtures" / "agentforge" / "last-json-effb5d0"


def test_every_collection_reads_in_a_constant_number_of_queries(tmp_path, default_org):
    from django.core.management import call_command

    data = tmp_path / "data"
    shutil.copytree(AGENTFORGE_DATA, data)
    call_command("import_json", str(data), verbosity=0)
    store = DatabaseStore()
    grown = []
    for collection in DICT_COLLECTIONS:  # the audit log and chunk index are append-only lists
        records = store.all(collection)
        if not records:
            continue
        # Copy the record with the most nested data (roles, tools, messages...).
        richest = max(records, key=lambda record: len(repr(record)))
        few = _queries(lambda: store.all(collection))
        for i in range(MORE):
            store.save(collection, _copy(richest, i))
        assert len(store.all(collection)) == len(records) + MORE, collection
        assert _queries(lambda: store.all(collection)) == few, collection
        grown.append(collection)
    assert {"agents", "security/users", "security/roles", "conversations"} <= set(grown)
