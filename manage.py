#!/usr/bin/env python
"""Django's command-line utility for AgentForge DB."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentforge_site.settings")
    from django.conf import settings
    from django.core.management import execute_from_command_line
    from django.core.management.base import CommandError, CommandParser, handle_default_options
    from django.db import OperationalError

    from agentforge_site.dbconfig import ConfigurationError

    # --settings / --pythonpath first, as Django's runner does, so the settings read below are the
    # ones the command will use.
    parser = CommandParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--settings")
    parser.add_argument("--pythonpath")
    try:
        handle_default_options(parser.parse_known_args(sys.argv[2:])[0])
    except CommandError:
        pass  # Django's runner reports malformed options itself
    try:
        # Read the settings before Django's runner: it keeps a settings error aside and, for
        # commands that run the system checks (migrate, makemigrations), fails later with an
        # unrelated AppRegistryNotReady traceback instead of this one line.
        settings.INSTALLED_APPS
        execute_from_command_line(sys.argv)
    except ConfigurationError as exc:
        # One line naming the variable, never a traceback.
        sys.stderr.write(f"configuration error: {exc}\n")
        sys.exit(2)
    except OperationalError as exc:
        # A wrong database name, role or password reaches a pooled command only as the pool's
        # "couldn't get a connection after 30 s": one direct connection names the real reason.
        sys.stderr.write(f"database error: {database_error_reason(exc)}\n")
        sys.exit(1)


def database_error_reason(exc) -> str:
    from django.db import connections

    from operations.connection import one_line_error, probe

    try:
        probe(connections["default"], timeout=5)
    except Exception as reason:
        return one_line_error(reason)
    return one_line_error(exc)


if __name__ == "__main__":
    main()
