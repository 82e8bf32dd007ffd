import time

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS

from operations.backup import BackupError, backup_database, describe


class Command(BaseCommand):
    help = (
        "Back up the database with its native tool (pg_dump -Fc, mysqldump --single-transaction, SQLite's "
        "online backup API) or the portable JSON-lines format (SQL Server, Oracle, or --format portable), "
        "check the file and print where it went."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", help="File or directory to write (default: BACKUP_DIR).")
        parser.add_argument("--format", choices=("native", "portable"), default=None,
                            help="native (default where the backend has a tool) or portable.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias (default: default).")

    def handle(self, *args, **options):
        start = time.perf_counter()
        try:
            path = backup_database(options["output"], alias=options["database"], method=options["format"])
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"backup written to {describe(path)} in {time.perf_counter() - start:.2f} s")
