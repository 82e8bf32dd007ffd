import json

from django.core.management.base import CommandError

from agentforge_site.management import AgentForgeCommand
from operations.connection import check_connection


class Command(AgentForgeCommand):
    help = "Check the database connection: backend, version, latency, pool and migrations."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument("--fail-on-pending", action="store_true", help="Exit non-zero when migrations are pending.")
        parser.add_argument(
            "--quiet-migrations",
            action="store_true",
            help="Print the number of pending migrations, not their names (scripts/test).",
        )

    def handle(self, *args, **options):
        report = check_connection()
        if not report.ok:
            raise CommandError(
                f"cannot connect to {report.vendor} database {report.database!r} at {report.host}: {report.error}"
            )
        if options["json"]:
            self.stdout.write(json.dumps(report.__dict__, default=str, indent=2))
        else:
            pool = ", ".join(f"{k}={v}" for k, v in report.pool.items())
            self.stdout.write(f"backend:     {report.backend}")
            self.stdout.write(f"server:      {report.server_version}")
            self.stdout.write(f"database:    {report.database} ({report.host})")
            self.stdout.write(f"latency:     {report.latency_ms} ms")
            self.stdout.write(f"pool:        {pool}")
            self.stdout.write(
                f"migrations:  {report.applied_migrations} applied, {len(report.pending_migrations)} pending"
            )
            for name in [] if options["quiet_migrations"] else report.pending_migrations:
                self.stdout.write(f"  pending: {name}")
            self.stdout.write(self.style.SUCCESS("OK"))
        if options["fail_on_pending"] and report.pending_migrations:
            raise CommandError(f"{len(report.pending_migrations)} migrations pending: run python manage.py migrate")
