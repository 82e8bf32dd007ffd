"""``changepassword <email>`` for users who belong to organizations.

Django's command finds the user through ``User.objects``, which fails closed with no
organization active, and by ``email`` alone, which two organizations may share. This one
finds the user across organizations (``--org`` picks one when the email is shared), then
runs Django's prompts and checks inside that user's organization, so the save, the
password history and the audit entry (``password_change``) go through the usual signals.
It wins over django.contrib.auth's command because accounts comes first in INSTALLED_APPS.
"""

from django.contrib.auth.management.commands.changepassword import Command as ChangePasswordCommand
from django.core.management.base import CommandError

from accounts.models import User, normalize_email_address
from agentforge_core.tenancy import OrgScopeError, org_scope, resolve_org


class Command(ChangePasswordCommand):
    help = "Change a user's password: the email, and --org when several organizations have a user with it."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--org", help="the user's organization (its UUID or legacy id, e.g. org_default)")

    def handle(self, *args, **options):
        user = self.find_user(options["username"], options.get("org"), options["database"])
        with org_scope(user.org_id):
            return super().handle(*args, **{**options, "username": user.email})

    @staticmethod
    def find_user(email, org, database) -> User:
        if not email:
            raise CommandError("name the user by email: manage.py changepassword EMAIL [--org ORG]")
        users = User.all_orgs.using(database).by_email(email).select_related("org")
        if org:
            try:
                users = users.filter(org_id=resolve_org(org))
            except OrgScopeError as exc:
                raise CommandError(str(exc)) from None
        found = list(users[:10])
        if not found:
            raise CommandError(
                f"user '{normalize_email_address(email)}' does not exist" + (f" in {org}" if org else "")
            )
        if len(found) > 1:
            orgs = ", ".join(sorted(u.org.legacy_id or str(u.org_id) for u in found))
            raise CommandError(
                f"'{normalize_email_address(email)}' is a user of several organizations ({orgs}): add --org"
            )
        return found[0]
