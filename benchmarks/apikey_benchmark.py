"""API-key checks at 100,000 keys: recording each use at most once a minute vs a write per check.

    .venv/bin/python benchmarks/apikey_benchmark.py [--keys 100000] [--checks 2000]
    DB_TYPE=postgresql DB_HOST=127.0.0.1 DB_USER=postgres DB_NAME=af_bench .venv/bin/python benchmarks/apikey_benchmark.py

Uses the configured backend with a scratch test database (created and dropped here; SQLite
uses a temporary file). ``--keys`` keys spread over 20 organizations; each timed check presents
one of 200 "busy" keys, as API traffic does (a few clients, many requests each).

Rows printed, all in the same run:
  write per check   the previous behaviour: every valid check UPDATEs last_used_at/last_used_ip
  once a minute     today's get_from_key: only the first use of a key in a minute writes
  no recording      get_from_key(record_use=False): the read alone, the floor
  ORM read          the previous read (a copy): the ORM's select_related lookup by prefix
"""

from __future__ import annotations

import argparse
import hmac
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--checks", type=int, default=2000, help="timed checks per contender")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="af-apikey-bench-"))
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("SQLITE_TEST_PATH", str(work / "bench.sqlite3"))
    import agentforge_site

    agentforge_site.setup()
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from accounts.models import Organization
    from agentforge_core.crypto import sha256_hex
    from agentforge_core.tenancy import unscoped
    from security.models import APIKey
    from security.models.api_keys import KEY_PREFIX, _split

    rng = random.Random(args.seed)
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        with unscoped():
            orgs = [Organization.objects.create(name=f"Org {n}", slug=f"org-{n}") for n in range(20)]
        plaintexts = []
        batch = []
        for n in range(args.keys):
            prefix = KEY_PREFIX + secrets.token_hex(4)
            plaintext = f"{prefix}_{secrets.token_urlsafe(32)}"
            if n < 200:
                plaintexts.append(plaintext)
            batch.append(
                APIKey(
                    org=orgs[n % len(orgs)],
                    name=f"key {n}",
                    prefix=prefix,
                    key_hash=sha256_hex(plaintext),
                    expires_at=None,
                )
            )
            if len(batch) == 5000:
                APIKey.all_orgs.bulk_create(batch)
                batch = []
        APIKey.all_orgs.bulk_create(batch)
        if connection.vendor in ("postgresql", "mysql", "sqlite"):
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE api_keys" if connection.vendor != "mysql" else "ANALYZE TABLE api_keys")

        def write_per_check(plaintext, ip):
            key = APIKey.all_orgs.get_from_key(plaintext, ip=ip, record_use=False)
            APIKey.all_orgs.filter(pk=key.pk).update(last_used_at=timezone.now(), last_used_ip=ip)
            return key

        def orm_read(plaintext, ip):
            # The previous read, copied: the ORM compiles the select_related lookup each time.
            prefix, digest = _split(plaintext)
            match = None
            for candidate in APIKey.all_orgs.filter(prefix=prefix).select_related("user").order_by():
                if hmac.compare_digest(candidate.key_hash, digest):
                    match = candidate
            assert match is not None and not match.is_revoked and not match.is_expired
            assert match.user_id is None or match.user.is_active
            return match

        contenders = {
            "write per check": write_per_check,
            "once a minute": lambda plaintext, ip: APIKey.all_orgs.get_from_key(plaintext, ip=ip),
            "no recording": lambda plaintext, ip: APIKey.all_orgs.get_from_key(plaintext, ip=ip, record_use=False),
            "ORM read": orm_read,
        }
        samples = {name: [] for name in contenders}
        plan = [(rng.choice(plaintexts), f"192.0.2.{rng.randrange(1, 4)}") for _ in range(args.checks)]
        for name, check in contenders.items():  # warm-up: connection, caches, first-use writes
            for plaintext, ip in plan[:50]:
                assert check(plaintext, ip) is not None
        # Contenders alternate check by check, so a noisy neighbour hurts them alike.
        for plaintext, ip in plan:
            for name, check in contenders.items():
                start = time.perf_counter()
                check(plaintext, ip)
                samples[name].append(time.perf_counter() - start)

        print(
            f"backend: {settings.DB_TYPE} ({connection.vendor}), {args.keys:,} keys, "
            f"{args.checks:,} checks per contender over 200 busy keys and 3 client addresses"
        )
        print(f"{'contender':<16} {'median ms':>10} {'p95 ms':>8} {'checks/s':>9}")
        for name, values in samples.items():
            ordered = sorted(values)
            p95 = ordered[int(0.95 * (len(ordered) - 1))]
            print(
                f"{name:<16} {statistics.median(ordered) * 1000:>10.3f} {p95 * 1000:>8.3f} "
                f"{len(values) / sum(values):>9.0f}"
            )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
