from django.core.management.base import CommandError

from agentforge_site.management import AgentForgeCommand
from operations.backup import BackupError, describe, restore_database


class Command(AgentForgeCommand):
    help = (
        "Restore a backup written by `manage.py backup`. Refuses a database that holds any row in any "
        "of the project's tables unless --force is given."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("path", help="The backup file.")
        parser.add_argument("--force", action="store_true", help="Overwrite a database that holds data.")
        self.add_database_argument(parser)

    def handle(self, *args, **options):
        try:
            result = restore_database(options["path"], force=options["force"], alias=self.get_database(options))
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        rows = sum(result.rows.values())
        self.stdout.write(
            f"restored {describe(result.path)} ({result.method}) in {result.seconds:.2f} s: "
            f"{rows} rows in {sum(1 for n in result.rows.values() if n)} tables"
        )
