"""python manage.py rechain_audit_log [--org ORG] : hash entries bulk-inserted without one."""

from django.core.management.base import BaseCommand

from security.audit import rechain


class Command(BaseCommand):
    help = "Compute the hash chain for audit entries that lack a hash (after a bulk import)."

    def add_arguments(self, parser):
        parser.add_argument("--org", help="one organization (UUID or legacy id), or 'system'")

    def handle(self, *args, org, **options):
        self.stdout.write(f"{rechain(org_id=org)} entries hashed")
