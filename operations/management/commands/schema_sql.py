from django.conf import settings
from django.core.management.base import CommandError

from agentforge_site.dbconfig import DB_TYPES
from agentforge_site.management import AgentForgeCommand
from operations.schema import render_schema


def _version(value: str) -> tuple[int, int]:
    parts = value.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise CommandError(f"--server-version: expected MAJOR[.MINOR], got {value!r}") from None


class Command(AgentForgeCommand):
    help = (
        "Print the DDL of every migration for the configured DB_TYPE (or --db-type) "
        "without connecting to a database server."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--db-type", choices=DB_TYPES, help="Render for this backend instead of DB_TYPE.")
        parser.add_argument("--server-version", type=_version, help="Target server version, e.g. 2019 or 10.11.")
        parser.add_argument("--app", action="append", dest="apps", help="Only these apps (repeatable).")

    def handle(self, *args, db_type=None, server_version=None, apps=None, **options):
        db_type = db_type or settings.DB_TYPE
        statements = 0
        self.stdout.write(f"-- AgentForge DB schema for {db_type} (rendered offline)")
        for app_label, name, sql in render_schema(db_type, server_version, apps):
            self.stdout.write(f"\n-- {app_label}.{name}")
            for statement in sql:
                self.stdout.write(
                    statement if statement.rstrip().endswith(";") or statement.startswith("--") else statement + ";"
                )
                statements += 1
        self.stdout.write(f"\n-- {statements} statements")
