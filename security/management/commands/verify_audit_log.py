"""python manage.py verify_audit_log [--org ORG] : each chain's first broken link, against its signed checkpoint."""

from django.core.management.base import BaseCommand, CommandError

from security.audit import SYSTEM_CHAIN, verify_all, verify_chain
from security.checkpoints import verify_key


class Command(BaseCommand):
    help = "Verify the hash chains of the audit log; exits non-zero at the first broken link."

    def add_arguments(self, parser):
        parser.add_argument(
            "--org",
            action="append",
            help=f"organization (UUID or legacy id), or '{SYSTEM_CHAIN}' for entries without one; repeatable",
        )
        parser.add_argument("--database", default="default")

    def handle(self, *args, org, database, **options):
        reports = [verify_chain(o, using=database) for o in org] if org else verify_all(using=database)
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
