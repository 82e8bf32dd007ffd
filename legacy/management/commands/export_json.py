"""``python manage.py export_json OUT_DIR``: write the legacy JSON layout back (rollback plan)."""

from __future__ import annotations

from django.core.management.base import CommandError

from agentforge_core.crypto import DecryptionError
from agentforge_core.tenancy import unscoped
from agentforge_site.management import AgentForgeCommand
from legacy.migration.exporter import export_directory, passwords_agentforge_cannot_verify


class Command(AgentForgeCommand):
    help = "Export the database as AgentForge legacy JSON files (secrets decrypted)."
    interrupted_note = "each file is the previous one or complete, never cut short; run export_json again"

    def add_arguments(self, parser):
        parser.add_argument("out_dir", help="Directory to write (created if missing; files are replaced).")

    def handle(self, *args, **options):
        try:
            with unscoped():
                counts = export_directory(options["out_dir"])
                locked_out = passwords_agentforge_cannot_verify()
        except DecryptionError as exc:
            raise CommandError(f"cannot decrypt a secret: {exc}") from None
        except OSError as exc:
            # one line naming the file (disk full, read-only) or the directory
            raise CommandError(f"{exc.filename or options['out_dir']}: {exc.strerror or exc}") from None
        if locked_out:
            self.stderr.write(
                f"warning: {locked_out} user(s) have a password AgentForge cannot verify (bcrypt, written after "
                "LEGACY_ROLLBACK_POSSIBLE was turned off); each signs in once with it back on, or resets it after the rollback"
            )
        if options["verbosity"] > 0:
            for name, count in counts.items():
                self.stdout.write(f"{name}: {count} record(s)")
            self.stdout.write(f"Exported to {options['out_dir']}")
