"""``migrate`` as the owner role: with row-level security the application's role (DB_USER)
may not create or alter tables, so on PostgreSQL the schema is changed by DB_MIGRATION_USER,
which then grants the application and bypass roles row access to every table."""

from django.core.management.commands import migrate
from django.db import connections

from accounts import rls


class Command(migrate.Command):
    def handle(self, *args, **options):
        connection = connections[options["database"]]
        with rls.owner_connection(connection) as as_owner:
            super().handle(*args, **options)
            if as_owner:
                rls.grant_app_privileges(connection)
