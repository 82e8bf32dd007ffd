"""``STORAGE_MODE=dual``: the parallel run (phase 1) -- the database and the JSON files.

Order and failure behaviour
---------------------------
save / delete
    1. The database, in a transaction (``transaction.atomic``; inside a caller's
       transaction it is a savepoint). A database error raises to the caller and the
       JSON file is not touched.
    2. After the commit (``transaction.on_commit``; at once in autocommit mode, at the
       end of the caller's outermost transaction otherwise; never if it rolls back) the
       JSON file is brought in line with the database for that one record: under the
       file's lock the record is read back from the database and written with the
       mapper's ``to_legacy`` -- the exact form ``export_json`` writes -- or removed when
       the database no longer has it. Reading back under the lock makes concurrent
       writers converge on the last committed state, whatever order their callbacks
       run in.
    3. A JSON failure (disk full, permissions, a malformed file) does not fail the call
       (the database, the source of truth from phase 1 on, has committed): it is logged
       on ``agentforge.legacy.store`` at ERROR, counted (``dual_write_failures()``,
       shown by /health/), and the JSON side stays behind until
       ``manage.py verify_parity --fix-from db`` rewrites it. A crash between the
       commit and the JSON write leaves the same drift and has the same repair.

get / all
    From the database; records the database does not have (yet) are read from the JSON
    file (``fallback_reads()`` counts them). Scoping applies to both sides: inside
    ``org_scope(org)`` a JSON-only record is visible only when its ``org_id`` (or
    ``org_default`` for app records, which have none) is that organization.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from agentforge_core.tenancy import ALL_ORGS, OrgScopeError, current_org, unscoped
from legacy.format.collections import is_security
from legacy.store import failures, write_behind
from legacy.store.db_store import DB_COLLECTIONS, DatabaseStore
from legacy.store.jsonfiles import COLLECTIONS, UNCHANGED, LegacyFiles, UnknownCollection, record_key

logger = logging.getLogger("agentforge.legacy.store")

# The app files carry no org_id (docs/legacy-format.md §10.10): they belong to org_default.
APP_COLLECTIONS_WITHOUT_ORG = {c for c in COLLECTIONS if not is_security(c)}


def legacy_org_of(collection: str, record: dict):
    """The legacy organization id a JSON record belongs to (None: no organization)."""
    if collection == "security/organizations":
        return record.get("id")
    if collection in APP_COLLECTIONS_WITHOUT_ORG:
        return record.get("org_id") or "org_default"
    return record.get("org_id")


class DualStore:
    mode = "dual"

    def __init__(self, data_dir, strict: bool = False):
        self.db = DatabaseStore(strict=strict)
        self.files = LegacyFiles(data_dir)

    @property
    def data_dir(self):
        return self.files.data_dir

    def _check(self, collection: str) -> str:
        if collection not in DB_COLLECTIONS:
            raise UnknownCollection(collection)
        return collection

    # --- writes ---------------------------------------------------------------------------

    def save(self, collection: str, record: dict) -> str:
        self._check(collection)
        legacy_id = self.db.save(collection, record)
        self._after_commit("save", collection, legacy_id)
        return legacy_id

    def delete(self, collection: str, record_id) -> bool:
        self._check(collection)
        key = str(record_id)
        active = self._active_legacy_org()
        deleted = self.db.delete(collection, key)
        if not deleted:
            # Not in the database (yet): it may still be in the JSON file.
            record = self.files.records(collection).get(key)
            if record is not None and not self._visible(collection, record, active):
                raise OrgScopeError(f"{collection}: record {key} belongs to another organization")
            deleted = record is not None
        self._after_commit("delete", collection, key)
        if collection == "agents":
            # The database side dropped the agent's conversations (as AgentForge did); so does the file.
            transaction.on_commit(lambda: self.drop_conversations_of(key))
        return deleted

    def drop_conversations_of(self, agent_id: str) -> bool:
        """Remove every conversation of ``agent_id`` from conversations.json; never raises."""

        def change(data):
            if not isinstance(data, dict):
                return UNCHANGED
            kept = {k: r for k, r in data.items() if not (isinstance(r, dict) and r.get("agent_id") == agent_id)}
            return UNCHANGED if len(kept) == len(data) else kept

        try:
            self.files.update("conversations", change)
            return True
        except Exception as exc:  # noqa: BLE001 - the database has committed; report, count, go on
            failures.record_failure("delete", "conversations", f"agent {agent_id}", exc)
            logger.error(
                "dual write: the conversations of deleted agent %s were not removed from the JSON file "
                "(%s: %s); run manage.py verify_parity --fix-from db",
                agent_id,
                type(exc).__name__,
                exc,
            )
            return False

    def _after_commit(self, operation: str, collection: str, key: str) -> None:
        queue = write_behind.queue_for(self.files.data_dir, self.sync_many, settings.DUAL_WRITE_DELAY)
        transaction.on_commit(lambda: queue.enqueue(collection, key, operation))

    def flush(self) -> None:
        """Write the JSON changes still queued behind the database (see write_behind)."""
        write_behind.queue_for(self.files.data_dir, self.sync_many, settings.DUAL_WRITE_DELAY).flush()

    def sync_json(self, collection: str, key: str, operation: str = "sync") -> bool:
        """Make the JSON file's copy of one record equal the database's; never raises."""
        return self.sync_many(collection, {key: operation})

    def sync_many(self, collection: str, operations: dict[str, str]) -> bool:
        """Make the JSON file's copies of ``operations``' keys equal the database's, in one
        rewrite; never raises. Returns False (after logging and counting) when the file
        could not be written.
        """

        def read_changes():
            # Read under the file lock, after the commits: the latest committed state, so
            # concurrent writers converge whatever order their rewrites run in.
            changes = {}
            with unscoped():
                for key in operations:
                    record = DatabaseStore().get(collection, key)
                    if record is not None and record_key(collection, record) != key:
                        logger.warning(
                            "%s: record %s reads back with id %s", collection, key, record_key(collection, record)
                        )
                    changes[key] = record
            return changes

        try:
            self.files.apply(collection, read_changes)
            return True
        except Exception as exc:  # noqa: BLE001 - the database has committed; report, count, go on
            for key, operation in operations.items():
                failures.record_failure(operation, collection, key, exc)
                logger.error(
                    "dual write: the database has %s %s %s but the JSON file was not updated (%s: %s); "
                    "run manage.py verify_parity --fix-from db",
                    "saved" if operation == "save" else "deleted" if operation == "delete" else "changed",
                    collection,
                    key,
                    type(exc).__name__,
                    exc,
                )
            return False

    # --- reads ------------------------------------------------------------------------------

    def _active_legacy_org(self):
        """The active organization's legacy id, ALL_ORGS, or None (system use)."""
        active = current_org()
        if active is None:
            if self.db.strict:
                raise OrgScopeError("the store is strict and no organization is active: use org_scope(org)")
            return None
        if active is ALL_ORGS:
            return ALL_ORGS
        from accounts.models import Organization

        legacy = Organization._base_manager.filter(pk=active).values_list("legacy_id", flat=True).first()
        return legacy or str(active)

    @staticmethod
    def _visible(collection: str, record: dict, active) -> bool:
        if active is None or active is ALL_ORGS:
            return True
        return legacy_org_of(collection, record) == active

    def get(self, collection: str, record_id) -> dict | None:
        self._check(collection)
        record = self.db.get(collection, record_id)
        if record is not None:
            return record
        record = self.files.records(collection).get(str(record_id))
        if record is None or not self._visible(collection, record, self._active_legacy_org()):
            return None
        failures.record_fallback_read(collection)
        return record

    def all(self, collection: str) -> list[dict]:
        self._check(collection)
        records = self.db.all(collection)
        seen = {record_key(collection, r) for r in records}
        active = self._active_legacy_org()
        extra = [
            r
            for key, r in self.files.records(collection).items()
            if key not in seen and isinstance(r, dict) and self._visible(collection, r, active)
        ]
        if extra:
            failures.record_fallback_read(collection, len(extra))
        return records + extra


__all__ = ["DualStore", "legacy_org_of"]
