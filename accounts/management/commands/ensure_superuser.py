"""``ensure_superuser --email EMAIL``: create the superuser, or reset it, with the password
in the environment variable ADMIN_PASSWORD (never an argument: a command line is visible
to every user of the machine in ``ps``). Run by ``scripts/quickstart`` on every start."""

import os

from django.core.management.base import BaseCommand, CommandError

from accounts.services import ensure_superuser


class Command(BaseCommand):
    help = "Create the default organization's superuser EMAIL, or reset it, with the password in $ADMIN_PASSWORD."

    def add_arguments(self, parser):
        parser.add_argument("--email", required=True)

    def handle(self, *args, email, **options):
        password = os.environ.get("ADMIN_PASSWORD")
        if not password:
            raise CommandError("set the password in the environment variable ADMIN_PASSWORD")
        user, created = ensure_superuser(email, password)
        self.stdout.write(f"{'created' if created else 'reset'} superuser {user.email}")
