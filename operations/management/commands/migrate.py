"""``migrate`` as the owner role: with row-level security the application's role (DB_USER)
may not create or alter tables, so on PostgreSQL the schema is changed by DB_MIGRATION_USER,
which then grants the application and bypass roles row access to every table."""

from django.core.management.commands import migrate
from django.db import connections

from accounts import rls


class Command(migrate.Command):
    def handle(self, *args, **options):
        connection = connections[options["database"]]
        previous = connection.settings_dict.get("USER")
        switch = connection.vendor == "postgresql" and not connection.in_atomic_block
        if switch:
            rls.use_owner_role(connection)
        try:
            super().handle(*args, **options)
            if switch:
                rls.grant_app_privileges(connection)
        finally:
            if switch and connection.settings_dict.get("USER") != previous:
                rls.use_app_role(connection)
