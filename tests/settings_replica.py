"""Test settings for test_replicas_streaming.py: scripts/start-replica's primary and its replica.

The test database is created on the primary (REPLICA_PRIMARY_PORT, 5433) and reaches the
replica (REPLICA_PORT, 5434) by streaming replication; the replica alias is pointed at it
once it exists (see the django_db_setup fixture of that module). scripts/test runs these
tests in the PostgreSQL leg: scripts/test postgresql tests/test_replicas_streaming.py.
"""

import os

os.environ.update(
    DB_TYPE="postgresql",
    DB_HOST="127.0.0.1",
    DB_PORT=os.environ.get("REPLICA_PRIMARY_PORT", "5433"),
    DB_USER="postgres",
    DB_PASSWORD="",
    DB_REPLICA_HOSTS="127.0.0.1:" + os.environ.get("REPLICA_PORT", "5434"),
    DB_REPLICA_MAX_LAG="30",
    DB_REPLICA_CHECK_INTERVAL="0.2",
)
os.environ.pop("DATABASE_URL", None)

from tests.settings import *  # noqa: E402,F401,F403
