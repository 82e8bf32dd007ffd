"""``STORAGE_MODE=json``: the legacy files only, as the JSON-era application used them."""

from __future__ import annotations

import copy

from legacy.store.jsonfiles import LegacyFiles, check_collection


class JsonStore:
    """save/get/delete/all on the legacy JSON files (no database access at all).

    No organization scoping: the JSON-era application had none for its app files, and
    the security files carry their ``org_id`` in every record for the caller to check.
    """

    mode = "json"

    def __init__(self, data_dir):
        self.files = LegacyFiles(data_dir)

    @property
    def data_dir(self):
        return self.files.data_dir

    def save(self, collection: str, record: dict) -> dict:
        check_collection(collection)
        record = copy.deepcopy(record)
        self.files.put(collection, record)
        return record

    def get(self, collection: str, record_id) -> dict | None:
        return self.files.records(check_collection(collection)).get(str(record_id))

    def delete(self, collection: str, record_id) -> bool:
        return self.files.remove(check_collection(collection), str(record_id))

    def all(self, collection: str) -> list[dict]:
        return list(self.files.records(check_collection(collection)).values())
