from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS

from operations.backup import BackupError, describe, restore_database


class Command(BaseCommand):
    help = (
        "Restore a backup written by `manage.py backup`. Refuses a database that holds any row in any "
        "of the project's tables unless --force is given."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("path", help="The backup file.")
        parser.add_argument("--force", action="store_true", help="Overwrite a database that holds data.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias (default: default).")

    def handle(self, *args, **options):
        try:
            result = restore_database(options["path"], force=options["force"], alias=options["database"])
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        rows = sum(result.rows.values())
        self.stdout.write(
            f"restored {describe(result.path)} ({result.method}) in {result.seconds:.2f} s: "
            f"{rows} rows in {sum(1 for n in result.rows.values() if n)} tables"
        )
