"""python manage.py verify_audit_log [--org ORG] : each chain's first broken link, against its signed checkpoint."""

from django.core.management.base import CommandError

from security.audit import SYSTEM_CHAIN, verify_all, verify_chain
from security.checkpoints import verify_key
from security.management.base import AuditChainCommand


class Command(AuditChainCommand):
    help = "Verify the hash chains of the audit log; exits non-zero at the first broken link."

    def add_arguments(self, parser):
        self.add_org_argument(
            parser, many=True, also=(SYSTEM_CHAIN,), help=f"'{SYSTEM_CHAIN}' is the entries without one"
        )
        self.add_database_argument(parser)

    def handle(self, *args, org, **options):
        database = self.get_database(options)
        orgs = self.get_orgs(org)
        reports = [verify_chain(o, using=database) for o in orgs] if orgs else verify_all(using=database)
        if verify_key() is None:
            self.stdout.write(
                "no AUDIT_VERIFY_KEY: chains checked against the database only (a rewrite with recomputed "
                "hashes, a deleted chain or an older backup restored go unnoticed)"
            )
        broken = 0
        for r in reports:
            if r.ok:
                self.stdout.write(f"{r.chain}: OK ({r.checked} entries)")
            else:
                broken += 1
                self.stdout.write(f"{r.chain}: BROKEN at entry {r.broken_id} after {r.checked} entries: {r.reason}")
        if broken:
            raise CommandError(f"{broken} audit chain(s) broken")
        self.stdout.write(f"{len(reports)} chain(s) verified")
