"""python manage.py rebuild_vector_index [--org ORG] : rewrite the vector search caches' files."""

from agentforge_site.management import AgentForgeCommand
from knowledge.vectors import rebuild, stamp_unversioned


class Command(AgentForgeCommand):
    help = (
        "Give a version to chunk vectors written around set_embeddings (bulk inserts, raw SQL, a restore), "
        "then rebuild every vector set's cache file under VECTOR_INDEX_DIR (exact matrix, and the approximate "
        "index from VECTOR_ANN_MIN_VECTORS vectors). Search processes start from these files."
    )

    def add_arguments(self, parser):
        self.add_org_argument(parser, help="one organization; default: all")

    def handle(self, *args, org=None, **options):
        def report(entry):
            kind = "approximate + exact" if entry["approximate"] else "exact"
            self.stdout.write(
                f"organization {entry['org']} tool {entry['tool'] or '-'} model {entry['model'] or '-'}: "
                f"{entry['vectors']} vectors at version {entry['version']} ({kind})"
            )

        stamped = stamp_unversioned()
        if stamped:
            self.stdout.write(f"{stamped} unversioned vectors stamped")
        done = rebuild(self.get_org(org), report=report)
        self.stdout.write(f"{len(done)} vector sets written")
