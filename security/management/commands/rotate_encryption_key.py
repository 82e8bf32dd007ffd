"""python manage.py rotate_encryption_key [--batch-size N] [--dry-run]"""

from django.core.management.base import CommandError

from agentforge_core import crypto
from agentforge_site.management import AgentForgeCommand
from security.rotation import rotate_all


class Command(AgentForgeCommand):
    help = "Re-encrypt every encrypted value with the first key of ENCRYPTION_KEY (safe to re-run)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--dry-run", action="store_true", help="count what would change, write nothing")
        self.add_database_argument(parser)

    def handle(self, *args, batch_size, dry_run, **options):
        keys = crypto.current_keys()
        self.stdout.write(f"first key: {keys[0].key_id}; decrypting with: {', '.join(k.key_id for k in keys)}")
        reports = rotate_all(batch_size=batch_size, dry_run=dry_run, using=self.get_database(options))
        errors = 0
        width = max(len(r.table) for r in reports)
        for r in reports:
            self.stdout.write(
                f"{r.table:<{width}}  scanned {r.scanned:>6}  {'would rotate' if dry_run else 'rotated'} {r.rotated:>6}"
                f"  current {r.current:>6}  plaintext {r.encrypted_plaintext:>4}"
                f"  changed-concurrently {r.changed_concurrently:>3}  errors {len(r.errors):>3}"
            )
            for message in r.errors[:20]:
                self.stderr.write(f"  {message}")
            errors += len(r.errors)
        total = sum(r.rotated + r.encrypted_plaintext for r in reports)
        self.stdout.write(
            f"{'would re-encrypt' if dry_run else 're-encrypted'} {total} value(s) in {len(reports)} table(s)"
        )
        if errors:
            raise CommandError(f"{errors} value(s) could not be decrypted with the configured keys (see above)")
        if any(r.changed_concurrently for r in reports):
            self.stdout.write("some values changed while rotating: run the command again to finish")
