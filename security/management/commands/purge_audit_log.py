"""python manage.py purge_audit_log [--dry-run] : apply each organization's audit_retention_days."""

from django.core.management.base import CommandError

from accounts.models import Organization
from agentforge_site.management import AgentForgeCommand
from security.audit import AuditChainError, purge_expired, retention_days
from security.checkpoints import CheckpointError


class Command(AgentForgeCommand):
    help = (
        "Delete audit entries older than each organization's security.audit_retention_days (default 365); "
        "a chain that does not verify is not purged; each purge is signed as a checkpoint when AUDIT_SIGNING_KEY is set."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")

    def handle(self, *args, dry_run, **options):
        verb = "would be deleted" if dry_run else "deleted"
        total = 0
        # Every organization (system work).
        for org in [None, *Organization.all_orgs.order_by("name")]:
            try:
                deleted = purge_expired(org, dry_run=dry_run)
            except (AuditChainError, CheckpointError) as exc:
                raise CommandError(str(exc)) from None
            total += deleted
            name = org.name if org else "(no organization)"
            self.stdout.write(f"{name}: {deleted} {verb} (retention {retention_days(getattr(org, 'pk', None))} days)")
        self.stdout.write(f"{total} entries {verb}")
