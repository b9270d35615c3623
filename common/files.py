"""Files that several processes write: permissions after an atomic rename, and locks.

``tempfile`` creates files and folders private (0600 files, 0700 folders) so
that nobody sees them half-written; once complete they get the permissions any
other file or folder would get under the process's umask, e.g. readable by the
group. A lock file serialises the processes that build the same thing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing); the system releases
    it if the holder dies."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(path: str | Path) -> None:
    """Give ``path`` (and, for a folder, everything in it) the umask's usual permissions."""
    mask = _umask()
    path = Path(path)
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for child in path.rglob("*"):
            os.chmod(child, (0o777 if child.is_dir() else 0o666) & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)
