#!/usr/bin/env python
"""How long does a failed sign-in take, per kind of account? (email enumeration by timing)

Creates a scratch database (``<DB_NAME>_bench``, or ``data/signin_bench.sqlite3``; never the
real one) with one account per kind of password hash, then posts a wrong password to the admin
login through Django's test client (the whole HTTP stack in process: middleware, form, backend,
audit entries) for: an unknown email, an imported AgentForge hash (``pbkdf2_sha256``, 100,000
iterations), a bcrypt-SHA256 hash and a hash of the current default hasher. Each kind is timed
with the equalised ``EmailBackend`` and beside it with the obvious alternative, what it did
before (Django's ``check_password``, whose ``harden_runtime`` pads only within the preferred
hasher, and one default-hasher hash for an unknown email), for both hasher orders
(``LEGACY_ROLLBACK_POSSIBLE`` true: PBKDF2 first; false: bcrypt first). The kinds take turns,
so a loaded machine slows them alike. Prints median milliseconds, by the clock and in CPU time
(this thread's: the test client runs the whole request in it), and the max/min ratios.

    DB_TYPE=sqlite .venv/bin/python benchmarks/signin_timing_benchmark.py --repeat 5

Options: --repeat N (5 timed attempts per kind and contender), --json (one JSON line).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
warnings.filterwarnings("ignore", message="No directory at")  # WhiteNoise: static files are not collected here

import django  # noqa: E402

django.setup()

from django.contrib.auth.hashers import make_password  # noqa: E402

from accounts.backends import EmailBackend  # noqa: E402
from accounts.hashers import password_hashers  # noqa: E402

WRONG = "a wrong password"
RIGHT = "the right password 1"


class UnequalisedBackend(EmailBackend):
    """EmailBackend as it was: Django's check_password, and one hash with the default hasher
    when no password was verified (an unknown email, a locked account)."""

    @staticmethod
    def verify_password(user, raw_password):
        return user.check_password(raw_password), 1.0

    @staticmethod
    def pad_failure(spent):
        if not spent:
            make_password(RIGHT)


CONTENDERS = {"equalised": "accounts.backends.EmailBackend", "before": "__main__.UnequalisedBackend"}


def imported_pbkdf2(password: str) -> str:
    salt = "ef" * 32
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 100_000)
    return f"pbkdf2_sha256$100000${salt}${base64.b64encode(key).decode()}"


def setup_database():
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    base = settings.DATABASES["default"]
    if settings.DB_TYPE == "sqlite":
        data_dir = Path(settings.BASE_DIR) / "data"
        data_dir.mkdir(exist_ok=True)
        name = str(data_dir / "signin_bench.sqlite3")
    else:
        name = f"{base['NAME']}_bench"
    base.setdefault("TEST", {})["NAME"] = name
    return connection, connection.creation.create_test_db(verbosity=0, autoclobber=True)


def make_accounts() -> dict[str, str]:
    from accounts.models import Organization, User
    from settings_app.models import OrgSetting

    org = Organization.all_orgs.create(name="Sign-in bench", slug="signin-bench")
    # Lockout off: the timed failures must not turn the accounts into locked ones.
    OrgSetting.all_orgs.create(org=org, key="security.account_lockout_enabled", value=False)
    hashes = {
        "imported pbkdf2 100000": imported_pbkdf2(RIGHT),
        "bcrypt_sha256": make_password(RIGHT, hasher="bcrypt_sha256"),
        "pbkdf2 1000000": make_password(RIGHT, hasher="pbkdf2_sha256"),
    }
    emails = {"unknown email": "nobody@bench.test"}
    for label, encoded in hashes.items():
        email = f"{label.split()[0]}-{len(label)}@bench.test"
        user = User.all_orgs.create_user(email=email, org=org, is_staff=True)
        User.all_orgs.filter(pk=user.pk).update(password=encoded)
        emails[label] = email
    return emails


def time_failures(emails: dict, repeat: int) -> tuple[dict, dict]:
    """Median clock and CPU milliseconds per kind (CPU: this thread's, which a loaded machine
    does not inflate; the whole request runs in it)."""
    from django.test import Client

    client = Client()
    clock = {label: [] for label in emails}
    cpu = {label: [] for label in emails}
    for _ in range(repeat):
        for label, email in emails.items():
            started, started_cpu = time.perf_counter(), time.thread_time()
            response = client.post("/admin/login/?next=/admin/", {"username": email, "password": WRONG})
            clock[label].append(time.perf_counter() - started)
            cpu[label].append(time.thread_time() - started_cpu)
            assert response.status_code == 200, response.status_code

    def medians(samples):
        return {label: round(statistics.median(values) * 1000, 1) for label, values in samples.items()}

    return medians(clock), medians(cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from django.test import override_settings

    connection, db_name = setup_database()
    results = []
    try:
        emails = make_accounts()
        # The throttle would refuse these repeated failures before any password is checked.
        with override_settings(SIGNIN_THROTTLE_ACCOUNT_FAILURES=0, SIGNIN_THROTTLE_ADDRESS_FAILURES=0):
            for order, rollback in (
                ("PBKDF2 first (LEGACY_ROLLBACK_POSSIBLE=true)", True),
                ("bcrypt first (LEGACY_ROLLBACK_POSSIBLE=false)", False),
            ):
                with override_settings(PASSWORD_HASHERS=password_hashers(rollback)):
                    for contender, backend in CONTENDERS.items():
                        with override_settings(AUTHENTICATION_BACKENDS=[backend]):
                            time_failures(emails, 1)  # warm-up: the equalised backend measures its hashers once
                            clock, cpu = time_failures(emails, args.repeat)
                        for measure, medians in (("clock", clock), ("CPU", cpu)):
                            results.append(
                                {
                                    "hashers": order,
                                    "contender": f"{contender} {measure}",
                                    "median_ms": medians,
                                    "max_over_min": round(max(medians.values()) / min(medians.values()), 2),
                                }
                            )
    finally:
        connection.creation.destroy_test_db(db_name, verbosity=0)

    if args.json:
        print(json.dumps({"backend": connection.vendor, "repeat": args.repeat, "results": results}))
        return
    print(
        f"failed sign-in, POST /admin/login/ through Django's test client on {connection.vendor}: "
        f"median ms of {args.repeat}, kinds taking turns (load: {os.getloadavg()[0]:.1f})"
    )
    labels = list(emails)
    for order in dict.fromkeys(r["hashers"] for r in results):
        rows = [r for r in results if r["hashers"] == order]
        print(f"\n{order}")
        print(f"{'account':26}" + "".join(f"{r['contender']:>18}" for r in rows))
        for label in labels:
            print(f"{label:26}" + "".join(f"{r['median_ms'][label]:>18.0f}" for r in rows))
        print(f"{'max / min':26}" + "".join(f"{r['max_over_min']:>17.2f}x" for r in rows))


if __name__ == "__main__":
    main()
