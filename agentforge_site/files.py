"""Files and directories that hold secrets: private to the account that runs the project.

An export holds decrypted secrets, a backup or an SQLite database holds everything: they
are written 0600 in 0700 directories whatever the umask (an umask of 022 would otherwise
make them readable by every local account).
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path) -> Path:
    """Create ``path`` (and its missing parents) 0700; an existing ``path`` is made 0700 too,
    its existing parents are left as they are."""
    path = Path(path)
    missing = []
    parent = path
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            pass
        os.chmod(directory, PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)
    return path


def open_private(path, mode: str = "w"):
    """``open(path, mode)`` for writing a new or truncated file that only its owner can read."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # an existing file keeps its mode through O_CREAT
    except BaseException:
        os.close(fd)
        raise
    # fdopen() owns the descriptor from here: if it fails half-way (an interrupt) it has closed
    # it already, and closing it again here would end in EBADF instead of the interrupt.
    return os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")


def private_sqlite_files(sender, connection, **kwargs) -> None:
    """On each new SQLite connection: the database file and its WAL/SHM/journal files 0600.

    SQLite creates the WAL and SHM files with the database file's mode, so once the
    database is private they are created private as well."""
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    for path in (name, f"{name}-wal", f"{name}-shm", f"{name}-journal"):
        try:
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, PRIVATE_FILE)
        except FileNotFoundError:
            continue
