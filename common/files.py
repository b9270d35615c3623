"""File permissions for files and folders created through ``tempfile`` and renamed into place.

``tempfile`` creates them private (0600 files, 0700 folders) so that nobody
sees them half-written; once complete they get the permissions any other file
or folder would get under the process's umask, e.g. readable by the group.
"""

from __future__ import annotations

import os
from pathlib import Path


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
