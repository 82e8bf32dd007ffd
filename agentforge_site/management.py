"""The base of the project's management commands (as Zulip's ZulipBaseCommand).

``--database`` and ``--org`` are declared here, so each has one meaning in every command:
``--org`` takes an organization's UUID or legacy id and is resolved by the tenancy resolver
(``agentforge_core.tenancy.resolve_org``), the same reading ``org_scope()`` gives. Errors end as a
one-line ``CommandError`` naming what was wrong, never a traceback.
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from agentforge_core.tenancy import OrgScopeError, resolve_org


class Interrupted(BaseException):
    """SIGTERM, raised wherever the command is, as Ctrl-C raises KeyboardInterrupt: open
    transactions roll back and ``finally`` blocks run (no ``except Exception`` stops it)."""


def _raise_interrupted(signum, frame):
    raise Interrupted()


class AgentForgeCommand(BaseCommand):
    # Appended to the one-line message when SIGINT/SIGTERM stops the command.
    interrupted_note = "stopped before it finished"

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # A wrong argument is one line on stderr (exit 2) like every other refusal, not the
        # whole usage block first; --help still prints it.
        parser.print_usage = lambda file=None: None
        return parser

    def add_database_argument(self, parser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias (default: default).")

    def add_org_argument(self, parser, *, many: bool = False, also: tuple[str, ...] = (), help: str = "") -> None:
        """``--org ORG`` (repeatable with ``many``): an organization's UUID or legacy id, or one of ``also``
        (a name that is not an organization, such as the audit log's 'system' chain)."""
        extra = "".join(f", or '{name}'" for name in also)
        parser.add_argument(
            "--org",
            action="append" if many else "store",
            metavar="ORG",
            help=f"organization (UUID or legacy id){extra}{'; repeatable' if many else ''}{': ' + help if help else ''}",
        )
        self._org_also = also

    def get_org(self, value):
        """The organization id (UUID) ``value`` names, ``value`` itself when it is one of the ``also``
        names, None when ``value`` is None. A UUID of no organization is refused (a typo must not
        read as "done, nothing to do"), unless :meth:`org_outlives_itself` says it still counts."""
        if value is None or value in getattr(self, "_org_also", ()):
            return value
        try:
            org_id = resolve_org(value)
        except OrgScopeError as exc:
            raise CommandError(f"--org {value}: {exc}") from None
        from accounts.models import Organization

        if not Organization.all_orgs.filter(pk=org_id).exists() and not self.org_outlives_itself(org_id):
            raise CommandError(f"--org {value}: no organization with this id")
        return org_id

    def org_outlives_itself(self, org_id) -> bool:
        """Whether the command still has work for a deleted organization (its audit chain does)."""
        return False

    def get_orgs(self, values) -> list:
        return [self.get_org(v) for v in values or ()]

    def get_database(self, options) -> str:
        alias = options["database"]
        if alias not in connections:
            raise CommandError(f"--database {alias}: no such database alias (known: {', '.join(connections)})")
        return alias

    def execute(self, *args, **options):
        # SIGTERM (kill, systemd, docker stop) unwinds like Ctrl-C instead of ending the
        # process mid-write; signals can only be caught in the main thread.
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_interrupted) if in_main_thread else None
        try:
            return super().execute(*args, **options)
        except OrgScopeError as exc:  # a scoping refusal deep in the work: one line, like any CommandError
            raise CommandError(str(exc)) from None
        except (KeyboardInterrupt, Interrupted) as exc:
            name, code = ("SIGTERM", 143) if isinstance(exc, Interrupted) else ("SIGINT", 130)
            raise CommandError(f"interrupted by {name}; {self.interrupted_note}", returncode=code) from None
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous)
