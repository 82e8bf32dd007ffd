"""A home for legacy records that have no table of their own.

Policies, invitations, knowledge-base and database permissions and Demo-Lab files are
kept here verbatim (one row per record, secrets removed), so nothing is dropped and
``export_json`` can write them back.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from agentforge_core.fields import EncryptedTextField
from agentforge_core.models import OrgOwnedModel, org_foreign_key, org_index


class LegacyRecord(OrgOwnedModel):
    org = org_foreign_key("legacy_records")
    collection = models.CharField(max_length=64, help_text='Legacy file, e.g. "security/policies".')
    legacy_id = models.CharField(max_length=128)
    data = models.JSONField(default=dict)
    # A pending invitation's token (AgentForge requires one and compares it in plaintext):
    # kept encrypted so an invitation still works after a rollback; data keeps its SHA-256.
    secret = EncryptedTextField(null=True, blank=True)
    imported_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "legacy_records"
        constraints = [
            models.UniqueConstraint(fields=["collection", "legacy_id"], name="legacy_records_uniq"),
        ]
        indexes = [org_index("legacy_records", "collection")]

    def __str__(self):
        return f"{self.collection}/{self.legacy_id}"
