#!/usr/bin/env python
"""Django's command-line utility for AgentForge DB."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentforge_site.settings")
    from django.core.management import execute_from_command_line

    from agentforge_site.dbconfig import ConfigurationError

    try:
        execute_from_command_line(sys.argv)
    except ConfigurationError as exc:
        # One line naming the variable, never a traceback.
        sys.stderr.write(f"configuration error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
