"""python manage.py rechain_audit_log [--org ORG] [--accept ID ...] : the operator's chain repair."""

from django.core.management.base import BaseCommand, CommandError

from security.audit import AuditChainError, rechain


class Command(BaseCommand):
    help = (
        "Adopt audit entries written without a hash (each named with --accept after checking it) and "
        "re-link the entries after them. Refuses altered entries and entries nobody named; audited."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", help="one organization (UUID or legacy id), or 'system'")
        parser.add_argument("--accept", type=int, action="append", default=[], metavar="ID",
                            help="id of an entry without a hash to adopt; repeatable")

    def handle(self, *args, org, accept, **options):
        try:
            changed = rechain(org_id=org, accept=accept)
        except AuditChainError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{changed} entries hashed or re-linked")
