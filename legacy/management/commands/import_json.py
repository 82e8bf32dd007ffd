"""``python manage.py import_json [DATA_DIR]``: move AgentForge's JSON files into the database."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError

from agentforge_site.management import AgentForgeCommand
from legacy.format.errors import LegacyDataError
from legacy.migration.importer import ImportAborted, ImportOptions, ImportRunning, import_directory, summary_rows


class Command(AgentForgeCommand):
    help = "Import the legacy AgentForge JSON data directory (one transaction, all or nothing)."
    interrupted_note = "nothing was imported (the transaction was rolled back)"

    def add_arguments(self, parser):
        parser.add_argument("data_dir", nargs="?", help="Legacy data directory (default: LEGACY_DATA_DIR, else data/).")
        parser.add_argument("--dry-run", action="store_true", help="Read, validate and map everything; write nothing.")
        parser.add_argument("--backup", action="store_true", help="Back the database up first and print where.")
        parser.add_argument(
            "--skip-existing", action="store_true", help="Leave rows whose legacy id already exists as they are."
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Report conflicts without writing; exit non-zero if any would block an import.",
        )

    def handle(self, *args, **options):
        data_dir = options["data_dir"] or getattr(settings, "LEGACY_DATA_DIR", "") or "data"
        verbosity = options["verbosity"]
        progress = self._progress if verbosity > 0 and sys.stderr.isatty() else None
        self._last = 0.0
        opts = ImportOptions(
            dry_run=options["dry_run"],
            skip_existing=options["skip_existing"],
            check=options["check"],
            backup=options["backup"],
            progress=progress,
        )
        if not Path(data_dir).is_dir():
            raise CommandError(f"{data_dir}: not a directory")
        try:
            report = import_directory(data_dir, opts)
        except ImportAborted as exc:
            self._clear_progress(progress)
            raise CommandError(f"{exc.error} (nothing was imported: the transaction was rolled back)") from None
        except (LegacyDataError, ImportRunning) as exc:
            self._clear_progress(progress)
            raise CommandError(str(exc)) from None
        except BaseException:  # SIGINT/SIGTERM: AgentForgeCommand reports them
            self._clear_progress(progress)
            raise
        self._clear_progress(progress)
        if report.backup_path and verbosity > 0:
            self.stdout.write(f"Backup written to {report.backup_path}")
        if verbosity > 0:
            self._print_report(report, verbosity, opts)
        if opts.check and report.errors:
            raise CommandError(f"{len(report.errors)} problem(s) would block the import (see above).")

    def _progress(self, collection, count):
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        sys.stderr.write(f"\r  importing {collection}: {count:,} records   ")
        sys.stderr.flush()

    def _clear_progress(self, progress):
        if progress is not None:
            sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()

    def _print_report(self, report, verbosity, opts):
        out = self.stdout
        mode = "CHECK (nothing written)" if opts.check else "DRY RUN (nothing written)" if opts.dry_run else "imported"
        out.write(f"{report.data_dir}: {mode} in {report.seconds:.1f}s")
        header = ("entity", "created", "updated", "unchanged", "skipped", "warnings")
        rows = summary_rows(report)
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        line = "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header))
        out.write(line)
        out.write("-" * len(line))
        for row in rows:
            out.write(
                "  ".join(str(v).ljust(widths[0]) if i == 0 else f"{v:,}".rjust(widths[i]) for i, v in enumerate(row))
            )
        if opts.dry_run or opts.check:
            out.write("(counts are what an import would do)")
        if report.total_warnings:
            out.write(f"\n{report.total_warnings} warning(s):")
            shown = report.warnings if verbosity > 1 else report.warnings[:20]
            for message in shown:
                out.write(f"  {message}")
            if report.total_warnings > len(shown):
                out.write(f"  ... {report.total_warnings - len(shown)} more (use -v 2)")
        if report.notes:
            out.write("\nNormalised:")
            for note, count in sorted(report.notes.items()):
                out.write(f"  {note}: {count}")
        if verbosity > 1 and (report.pipelined or report.pipeline_fallbacks):
            out.write("\nRead and mapped in a second process: " + (", ".join(report.pipelined) or "none"))
            for file, reason in report.pipeline_fallbacks.items():
                out.write(f"  {file}: imported in one process instead ({reason.splitlines()[0]})")
        if report.not_imported:
            out.write("\nNot imported (no home in the schema):")
            for what, count in report.not_imported.items():
                out.write(f"  {what}: {count}")
        if opts.check:
            for table, diffs in report.differences.items():
                for key, fields in diffs:
                    out.write(f"  differs from the database: {table} {key[0]}: {', '.join(fields)}")
            if report.errors:
                out.write(f"\n{len(report.errors)} blocking problem(s):")
                for message in report.errors:
                    out.write(f"  {message}")
