"""Mappers for the legacy app's own table: records without a table of their own
(policies, invitations, kb/db permissions, Demo-Lab files) kept in ``legacy_records``."""

from __future__ import annotations

import hashlib
import hmac

from accounts.models import Organization
from agentforge_core.crypto import sha256_hex
from legacy.format.errors import LegacyDataError, LegacyFieldError
from legacy.format.mappers.base import Mapped, Mapper, Row
from legacy.models import LegacyRecord

INVITATIONS = "security/invitations"


def revoked_invitation_token(digest: str) -> str:
    """A token for an invitation whose plaintext was never kept (rows imported before tokens were
    kept encrypted): AgentForge requires a string, and no old link may match it. Deterministic
    (parity stays clean), and unguessable without SECRET_KEY."""
    from django.conf import settings

    return hmac.new(settings.SECRET_KEY.encode("utf-8"), digest.encode("ascii"), hashlib.sha256).hexdigest()[:32]


class LegacyRecordMapper(Mapper):
    """Policies, invitations, kb/db permissions: kept verbatim in ``legacy_records``.

    An invitation's token is a secret: ``data`` keeps only its SHA-256 (``token_sha256``) and the
    plaintext is encrypted in ``secret``, so the export (and the dual-write store) hands AgentForge
    the invitation as it was and a pending invitation still works after a rollback.
    """

    model = LegacyRecord

    def map_record(self, record, ctx):
        rec, lid, mapped, where = self.begin(record)
        org_legacy = record.get("org_id")
        org_id = ctx.ref(Organization, org_legacy) if isinstance(org_legacy, str) else None
        if org_id is None:
            if org_legacy is not None:
                mapped.warnings.append(
                    f"{where}: org_id: {org_legacy!r} refers to no organization (kept under org_default)"
                )
            org_id = ctx.default_org_id()
        data, secret = dict(record), None
        if self.collection == INVITATIONS and isinstance(data.get("token"), str):
            secret = data["token"]
            data["token_sha256"] = sha256_hex(secret)
            data["token"] = None
            mapped.notes.append("invitation token kept encrypted (its SHA-256 beside it)")
        mapped.rows.append(
            Row(
                LegacyRecord,
                {"org_id": org_id, "collection": self.collection, "legacy_id": lid, "data": data, "secret": secret},
                key_fields=("collection", "legacy_id"),
            )
        )
        return mapped

    def to_legacy(self, row, ctx=None):
        data = dict(row.data)
        if self.collection == INVITATIONS:
            digest = data.pop("token_sha256", None)
            if data.get("token") is None and (row.secret or digest):
                data["token"] = row.secret or revoked_invitation_token(digest)
        return data

    def export_queryset(self):
        return LegacyRecord.all_orgs.filter(collection=self.collection).order_by("id")

    def export_key(self, instance, record):
        return instance.legacy_id


class LabMapper(Mapper):
    """Demo-Lab JSON files (``lab/<uuid>.json``, ``lab/<uuid>_meta.json``) → LegacyRecord
    rows with ``collection="lab"`` and the file name as id."""

    collection = "lab"
    model = LegacyRecord
    container = "file"
    stream = False

    def __init__(self):
        """No entry in legacy.format.collections: ``lab/`` is a folder of single-object files."""

    def map_file(self, name: str, data, ctx) -> Mapped:
        mapped = Mapped(name)
        org_legacy = data.get("org_id") if isinstance(data, dict) else None
        org_id = ctx.ref(Organization, org_legacy) if isinstance(org_legacy, str) else None
        if org_id is None:
            try:
                org_id = ctx.default_org_id()
            except LegacyFieldError as exc:
                raise LegacyDataError(f"lab/{name}", exc.message, None, exc.field) from None
        mapped.rows.append(
            Row(
                LegacyRecord,
                {"org_id": org_id, "collection": "lab", "legacy_id": name, "data": data},
                key_fields=("collection", "legacy_id"),
            )
        )
        return mapped

    def to_legacy(self, row, ctx=None):
        return row.data

    def export_queryset(self):
        return LegacyRecord.all_orgs.filter(collection="lab").order_by("legacy_id")
