"""``dumpdata`` for organization-scoped tables.

Django's dumpdata reads each model through its default manager, and ours fail closed
(``Model.objects`` raises OrgScopeError with no organization active), so the stock
command would stop at the first tenant table. A dump is system work: this override runs
the stock command inside ``unscoped()``, so it writes every organization's rows, exactly
as ``--all`` (the base managers) would, with all of dumpdata's options unchanged.
``loaddata`` needs no override: it saves rows with ``save_base(raw=True)`` through the
unscoped base manager.
"""

from django.core.management.commands.dumpdata import Command as DumpdataCommand

from agentforge_core.tenancy import unscoped


class Command(DumpdataCommand):
    help = DumpdataCommand.help + " Tenant tables are dumped for every organization."

    def handle(self, *app_labels, **options):
        with unscoped():
            return super().handle(*app_labels, **options)
