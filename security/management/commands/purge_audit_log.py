"""python manage.py purge_audit_log : apply each organization's audit_retention_days."""

from django.core.management.base import BaseCommand

from accounts.models import Organization
from security.audit import purge_expired, retention_days


class Command(BaseCommand):
    help = "Delete audit entries older than each organization's security.audit_retention_days (default 365)."

    def handle(self, *args, **options):
        total = 0
        for org in [None, *Organization.all_orgs.all()]:
            deleted = purge_expired(org)
            total += deleted
            name = org.name if org else "(no organization)"
            self.stdout.write(f"{name}: {deleted} deleted (retention {retention_days(getattr(org, 'pk', None))} days)")
        self.stdout.write(f"{total} entries deleted")
