"""Private files: the history is readable by its owner only, whatever the umask.

The database holds target URLs, error texts and queued notifications; other local users
have no business reading it. SQLite creates the -wal, -shm and -journal files with the mode
of the database file, so creating that one 0600 covers all of them. What already exists is
left as it is.

Imports the standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dirs(directory: Path) -> None:
    """Create `directory` and its missing parents 0700; raises OSError."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    for path in reversed(missing):
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, not ours to change
        os.chmod(path, DIR_MODE)  # the umask may have taken bits away


def create_private_file(path: Path) -> None:
    """Create `path` empty and 0600 if it does not exist (SQLite takes an empty file as a
    new database). Best effort: if it cannot be created, opening it reports why."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except OSError:
        return
    try:
        os.fchmod(fd, FILE_MODE)  # exact, whatever the umask took away
    finally:
        os.close(fd)
