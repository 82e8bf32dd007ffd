"""Record-by-record comparison of the JSON files and the database (``verify_parity``).

The database side is what ``export_json`` writes: the mapper's ``to_legacy`` of every
row. The JSON side is the file, with the normalisations the import applies on purpose
(one-way: stale tokens and one-time codes are not imported as valid, so the database has
``null`` where the file may have a value). Everything else must be equal, so an untouched
import shows zero drift.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from agentforge_core.tenancy import unscoped
from agentforge_site.replicas import primary_only
from legacy.format.collections import LEGACY_COLLECTIONS, file_label
from legacy.store.db_store import DB_COLLECTIONS, AppendOnlyError, DatabaseStore
from legacy.store.jsonfiles import OBJECT_COLLECTIONS, LegacyFiles, atomic_write_text, record_key

ABSENT = "<absent>"
RECORD = "<record>"

# One-way normalisations of the import (docs/legacy-format.md §10.5: "stale secrets stay dead").
_USER_NULLED = ("verification_token", "reset_password_token")
_MFA_NULLED = ("email_code", "sms_code")
_SECRET_FIELD = re.compile(
    r"(password|secret|token|api_?key|apikey|totp|backup_codes|_code$|auth_value|connection_string|webhook_url)", re.I
)


def parity_collections() -> list[str]:
    """Collections verify_parity handles, in the import order (referenced ones first):
    the database store's record collections and the single-object files."""
    return [c for c in LEGACY_COLLECTIONS if c in DB_COLLECTIONS or c in OBJECT_COLLECTIONS]


def normalise(collection: str, record):
    """The JSON record as the database keeps it (the import's one-way normalisations)."""
    if not isinstance(record, dict):
        return record
    record = copy.deepcopy(record)
    if collection == "security/users":
        for key in _USER_NULLED:
            if key in record:
                record[key] = None
        mfa = record.get("mfa")
        if isinstance(mfa, dict):
            for key in _MFA_NULLED:
                if key in mfa:
                    mfa[key] = None
    return record


@dataclass
class Difference:
    collection: str
    record_id: str
    field: str
    json_value: object
    db_value: object

    def line(self) -> str:
        return "\t".join(
            [
                self.collection,
                self.record_id,
                self.field,
                "json=" + show(self.field, self.json_value),
                "db=" + show(self.field, self.db_value),
            ]
        )


def show(field: str, value, limit: int = 160) -> str:
    """A value for the report; secrets are shown only as a short digest."""
    if value is ABSENT:
        return ABSENT
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    leaf = field.rsplit(".", 1)[-1]
    if value not in (None, "", [], {}) and _SECRET_FIELD.search(leaf):
        return f"<secret sha256:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def diff_values(a, b, path: str = "") -> list[tuple[str, object, object]]:
    """Field-level differences between two JSON values (dotted paths, [i] for lists)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            sub = f"{path}.{key}" if path else str(key)
            out.extend(diff_values(a.get(key, ABSENT), b.get(key, ABSENT), sub))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for index, (x, y) in enumerate(zip(a, b)):
            out.extend(diff_values(x, y, f"{path}[{index}]"))
        return out
    if a is ABSENT and b is ABSENT:
        return []
    if type(a) is not type(b) and not (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return [(path, a, b)]
    return [] if a == b else [(path, a, b)]


class Parity:
    """Compare and repair one data directory against the database."""

    def __init__(self, data_dir):
        self.files = LegacyFiles(data_dir)
        self.db = DatabaseStore()

    # --- reading both sides --------------------------------------------------------------------

    def json_side(self, collection: str) -> dict:
        if collection in OBJECT_COLLECTIONS:
            path = Path(self.files.data_dir) / file_label(collection)
            if not path.exists():
                return {}
            return {collection: json.loads(path.read_text(encoding="utf-8"))}
        return {key: normalise(collection, rec) for key, rec in self.files.records(collection).items()}

    @primary_only()
    def db_side(self, collection: str) -> dict:
        with unscoped():
            if collection in OBJECT_COLLECTIONS:
                from legacy.format.mappers import Context, registry

                exported = registry[collection].export(Context())
                return {} if exported is None else {collection: exported}
            if collection == "security/audit_logs":
                # Entries the database records natively (django-auditlog model changes,
                # sign-ins) have no legacy id and no JSON counterpart by design; export_json
                # includes them at rollback. Parity covers the legacy trail only.
                from legacy.format.mappers import Context, registry

                mapper, ctx = registry[collection], Context()
                queryset = mapper.export_queryset().filter(legacy_id__isnull=False)
                return {e.legacy_id: mapper.to_legacy(e, ctx) for e in queryset.iterator(chunk_size=1000)}
            return {record_key(collection, rec): rec for rec in self.db.all(collection)}

    def compare(self, collection: str) -> list[Difference]:
        json_records = self.json_side(collection)
        db_records = self.db_side(collection)
        out = []
        for key in list(json_records) + [k for k in db_records if k not in json_records]:
            a, b = json_records.get(key, ABSENT), db_records.get(key, ABSENT)
            if a is ABSENT or b is ABSENT:
                out.append(
                    Difference(
                        collection,
                        key,
                        RECORD,
                        "present" if a is not ABSENT else ABSENT,
                        "present" if b is not ABSENT else ABSENT,
                    )
                )
                continue
            for field, x, y in diff_values(a, b):
                out.append(Difference(collection, key, field, x, y))
        return out

    # --- repairs ------------------------------------------------------------------------------

    def fix_from_db(self, collection: str) -> None:
        """Rewrite the collection's JSON file from the database (under its lock)."""
        if collection in OBJECT_COLLECTIONS:
            exported = self.db_side(collection).get(collection)
            if exported is None:
                return
            ensure_ascii = LEGACY_COLLECTIONS[collection].ensure_ascii
            atomic_write_text(
                Path(self.files.data_dir) / file_label(collection),
                json.dumps(exported, ensure_ascii=ensure_ascii, indent=2),
            )
            return
        with self.files.locked(collection):
            records = self.db_side(collection)
            if collection == "security/audit_logs":
                data = list(records.values())
            else:
                data = records
            self.files.write(collection, data)

    def fix_from_json(self, collection: str, differences: list[Difference]) -> list[str]:
        """Write the JSON side of every drifting record into the database.

        Returns problems that could not be repaired (audit entries are append-only).
        """
        problems = []
        if collection in OBJECT_COLLECTIONS:
            self._import_object(collection)
            return problems
        json_records = self.files.records(collection)
        for key in dict.fromkeys(d.record_id for d in differences):
            try:
                with unscoped():
                    if key in json_records:
                        self.db.save(collection, json_records[key])
                    else:
                        self.db.delete(collection, key)
            except AppendOnlyError as exc:
                problems.append(str(exc))
        return problems

    def _import_object(self, collection: str) -> None:
        from django.db import transaction
        from django.utils import timezone

        from legacy.format.mappers import Context, registry
        from legacy.migration.writer import Writer

        data = self.json_side(collection).get(collection)
        if data is None:
            return
        with transaction.atomic(), unscoped():
            mapped = registry[collection].to_rows(data, Context())
            writer = Writer(now=timezone.now())
            writer.add(mapped)
            writer.flush()
