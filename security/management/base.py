"""What the audit-log commands share."""

from __future__ import annotations

from agentforge_site.management import AgentForgeCommand
from security.audit import chain_key, chain_keys


class AuditChainCommand(AgentForgeCommand):
    """An audit chain outlives its organization (the entries stay when the organization is
    deleted): ``--org`` may name a deleted organization whose chain is still there."""

    def org_outlives_itself(self, org_id) -> bool:
        return chain_key(org_id) in chain_keys()
