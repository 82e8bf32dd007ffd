"""``python manage.py verify_parity``: compare the JSON files with the database, record by record.

Prints one line per difference (tab-separated: collection, record id, field, JSON value,
database value; ``<record>`` when a record exists on one side only; secrets as a short
digest) and a summary per collection. Exit status 1 when any drift is found (or remains
after ``--fix-from``), 0 otherwise.

``--fix-from db`` rewrites the drifting JSON files from the database (the form
``export_json`` writes); ``--fix-from json`` writes the JSON side of every drifting record
into the database through the import mappers (records only in the database are deleted,
except audit entries, which are append-only).
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError

from agentforge_site.management import AgentForgeCommand
from legacy.format.errors import LegacyDataError
from legacy.migration.importer import ImportRunning, one_import_at_a_time
from legacy.store import legacy_data_dir
from legacy.store.parity import Parity, parity_collections


class DriftFound(CommandError):
    pass


class Command(AgentForgeCommand):
    help = "Compare the legacy JSON files with the database record by record (exit 1 on drift)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--collection",
            action="append",
            dest="collections",
            metavar="NAME",
            help='Only this collection (repeatable), e.g. "agents" or "security/users". Default: all.',
        )
        parser.add_argument("--fix-from", choices=("json", "db"), help="Repair the drift from this side.")
        parser.add_argument("--data-dir", help="Legacy data directory (default LEGACY_DATA_DIR, else data/).")
        parser.add_argument(
            "--limit", type=int, default=1000, help="Print at most this many differences (default 1000)."
        )

    def handle(self, *args, **options):
        known = parity_collections()
        collections = options["collections"] or known
        unknown = [c for c in collections if c not in known]
        if unknown:
            raise CommandError(f"unknown collection(s): {', '.join(unknown)} (known: {', '.join(known)})")
        collections = [c for c in known if c in collections]  # import order: referenced first
        data_dir = options["data_dir"] or legacy_data_dir()
        if not Path(data_dir).is_dir():
            raise CommandError(f"legacy data directory {data_dir} does not exist (set LEGACY_DATA_DIR or --data-dir)")
        parity = Parity(data_dir)
        verbosity = options["verbosity"]
        limit = options["limit"]
        fix = options["fix_from"]
        # Files win: the repair writes the database as an import does, so it waits for no import
        # and no import runs beside it (the comparison included, so it fixes what it compared).
        try:
            with one_import_at_a_time(skip=fix != "json"):
                self._compare_and_repair(parity, collections, fix, verbosity, limit)
        except ImportRunning as exc:
            raise CommandError(str(exc)) from None

    def _compare_and_repair(self, parity, collections, fix, verbosity, limit) -> None:
        try:
            drift = self._report(parity, collections, verbosity, limit)
        except LegacyDataError as exc:
            raise CommandError(str(exc)) from None
        total = sum(len(d) for d in drift.values())
        if not total:
            if verbosity:
                self.stdout.write(f"No drift: {len(collections)} collection(s) match.")
            return
        if not fix:
            raise DriftFound(
                f"drift: {total} difference(s) in {sum(1 for d in drift.values() if d)} collection(s); "
                "repair with --fix-from db (database wins) or --fix-from json (files win)"
            )

        problems = []
        drifting = [c for c in collections if drift[c]]
        for collection in drifting:
            if fix == "db":
                parity.fix_from_db(collection)
            else:
                problems.extend(parity.fix_from_json(collection, drift[collection]))
            if verbosity:
                records = len({d.record_id for d in drift[collection]})
                self.stdout.write(f"fixed from {fix}: {collection}: {records} record(s)")
        for problem in problems:
            self.stderr.write(f"not repaired: {problem}")
        remaining = {c: parity.compare(c) for c in drifting}
        left = sum(len(d) for d in remaining.values())
        if left:
            for differences in remaining.values():
                for difference in differences[:limit]:
                    self.stderr.write("still: " + difference.line())
            raise DriftFound(f"{left} difference(s) remain after --fix-from {fix}")
        if verbosity:
            self.stdout.write(f"Repaired: the JSON files and the database match ({total} difference(s) fixed).")

    def _report(self, parity, collections, verbosity, limit) -> dict:
        drift = {}
        printed = 0
        for collection in collections:
            differences = parity.compare(collection)
            drift[collection] = differences
            for difference in differences:
                if printed < limit:
                    self.stdout.write(difference.line())
                printed += 1
            if verbosity > 1 or (verbosity and differences):
                records = len({d.record_id for d in differences})
                self.stdout.write(f"# {collection}: {len(differences)} difference(s) in {records} record(s)")
        if printed > limit:
            self.stdout.write(f"# ... {printed - limit} more difference(s) not shown (--limit)")
        return drift
