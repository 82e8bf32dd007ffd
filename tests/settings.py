"""Test settings: the real settings, driven by the same DB_* variables, with fixed test keys."""

import os

os.environ["ENV_FILE"] = ""  # a developer's .env must not leak into the tests
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
# Two keys, so every test also exercises a key list (the first encrypts).
os.environ.setdefault(
    "ENCRYPTION_KEY",
    "dGVzdC1rZXktb25lLWZvci1hZ2VudGZvcmdlLXRlc3Q=,dGVzdC1rZXktdHdvLWZvci1hZ2VudGZvcmdlLXRlc3Q=",
)
os.environ.setdefault("DB_NAME", "agentforge")
# SQLite tests run on a file, as production does (WAL; other threads and processes can open
# it), not on a shared-cache in-memory database, whose table locks no deployment has.
os.environ.setdefault(
    "SQLITE_TEST_PATH",
    os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "data",
        f"test_{os.environ['DB_NAME']}_{os.getpid()}.sqlite3",
    ),  # one per run: runs may overlap
)

from agentforge_site.settings import *  # noqa: E402,F401,F403

# The tests render admin pages without running collectstatic first (production serves hashed names).
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405

# Production's hashers, in production's order, at a fraction of the cost (tests/hashers.py).
from tests.hashers import quick_password_hashers  # noqa: E402

PASSWORD_HASHERS = quick_password_hashers(LEGACY_ROLLBACK_POSSIBLE)  # noqa: F405
