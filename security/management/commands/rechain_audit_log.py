"""python manage.py rechain_audit_log [--org ORG] [--accept ID ...] : the operator's chain repair."""

from django.core.management.base import CommandError

from security.audit import SYSTEM_CHAIN, AuditChainError, rechain
from security.management.base import AuditChainCommand


class Command(AuditChainCommand):
    help = (
        "Adopt audit entries written without a hash (each named with --accept after checking it) and "
        "re-link the entries after them. Refuses altered entries and entries nobody named; audited."
    )

    def add_arguments(self, parser):
        self.add_org_argument(parser, also=(SYSTEM_CHAIN,), help="one chain; default: every chain")
        parser.add_argument(
            "--accept",
            type=int,
            action="append",
            default=[],
            metavar="ID",
            help="id of an entry without a hash to adopt; repeatable",
        )

    def handle(self, *args, org, accept, **options):
        try:
            changed = rechain(org_id=self.get_org(org), accept=accept)
        except AuditChainError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{changed} entries hashed or re-linked")
