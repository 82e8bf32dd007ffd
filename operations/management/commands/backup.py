import time

from django.core.management.base import CommandError

from agentforge_site.management import AgentForgeCommand
from operations.backup import BackupError, backup_database, describe


class Command(AgentForgeCommand):
    help = (
        "Back up the database with its native tool (pg_dump -Fc, mysqldump --single-transaction, SQLite's "
        "online backup API) or the portable JSON-lines format (SQL Server, Oracle, or --format portable), "
        "check the file and print where it went."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", help="File or directory to write (default: BACKUP_DIR).")
        parser.add_argument(
            "--format",
            choices=("native", "portable"),
            default=None,
            help="native (default where the backend has a tool) or portable.",
        )
        self.add_database_argument(parser)

    def handle(self, *args, **options):
        start = time.perf_counter()
        try:
            path = backup_database(options["output"], alias=self.get_database(options), method=options["format"])
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"backup written to {describe(path)} in {time.perf_counter() - start:.2f} s")
