"""``flush`` as the owner role: TRUNCATE (and resetting sequences) is the owner's on
PostgreSQL, never the application role's (docs/row-level-security.md)."""

from django.core.management.commands import flush
from django.db import connections

from accounts import rls


class Command(flush.Command):
    def handle(self, **options):
        with rls.owner_connection(connections[options["database"]]):
            super().handle(**options)
