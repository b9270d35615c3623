"""Files that several processes write: atomic writes, their permissions, and locks.

A file or folder is written under a temporary name beside its final one
(``.tmp-<name>-<random>``) and renamed into place once complete, so that no
reader ever sees it half-written; the temporary is removed on any failure,
Ctrl-C included. ``tempfile`` creates temporaries private (0600 files, 0700
folders); once complete they get the permissions any other file or folder
would get under the process's umask, e.g. readable by the group. A lock file
serialises the processes that build the same thing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import filelock

TEMPORARY = ".tmp-"  # how the name of every temporary file or folder begins


@contextlib.contextmanager
def locked(path: str | Path, timeout: float = -1) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path``, across processes (``filelock``).

    Parameters
    ----------
    path
        The lock file; created if missing, but not its folder.
    timeout
        Seconds to wait for the lock; ``-1`` waits as long as it takes, ``0`` tries once.

    Yields
    ------
    None
        While the lock is held. The system releases it if its holder dies.

    Raises
    ------
    FileNotFoundError
        The folder of ``path`` does not exist, or was removed while waiting: a removed
        folder is not created again (filelock would make it anew, and what is built under
        the lock would land in a folder its owner had removed).
    filelock.Timeout
        Another holder kept the lock ``timeout`` seconds.
    """
    path = Path(path)
    folder = path.parent
    try:  # the folder itself, held open: once removed, its link count is 0
        handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no folder for the lock file", str(folder)) from None
    try:
        with filelock.FileLock(str(path), timeout=timeout):
            if os.fstat(handle).st_nlink > 0:
                yield
                return
    finally:
        os.close(handle)
    with contextlib.suppress(OSError):  # the folder filelock made again: not ours to keep
        os.unlink(path)
        os.rmdir(folder)
    raise FileNotFoundError(errno.ENOENT, "the lock file's folder was removed", str(folder))


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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can fsync a folder
        _fsync(path)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", *, fsync: bool = False) -> Iterator[IO]:
    """Write the file ``path`` through a temporary beside it, renamed over it at the end.

    Parameters
    ----------
    path
        The file to write or replace; its folder must exist.
    mode
        How the temporary is opened (``"wb"``, or ``"w"`` for text).
    fsync
        Flush the file and then its folder to the disk, so that it survives a crash.

    Yields
    ------
    IO
        The temporary, open in ``mode``; ``path`` is replaced when the block ends without error.

    Raises
    ------
    OSError
        The temporary cannot be written or renamed (the temporary is removed, ``path`` is
        left as it was); so is any error raised in the block, Ctrl-C included.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMPORARY}{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        publish(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is not None or exc.errno is None:
            raise
        # a failed write (a full disk) names no file: name the one being written
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_folder(
    final: str | Path, *, replace: bool = False, fsync: bool = False
) -> Iterator[Path]:
    """Fill a staging folder beside ``final``, renamed to ``final`` at the end.

    Whether or not ``replace`` is set, a ``final`` that another process publishes
    while this one is writing is kept, and this one's folder is dropped: both
    were built from the same inputs.

    Parameters
    ----------
    final
        The folder to publish; the folder that holds it must exist.
    replace
        An existing ``final`` is replaced: first moved aside by an atomic rename (there
        is no moment at which another process can half-see it), then deleted. Otherwise
        the existing one is kept.
    fsync
        Flush every file in the folder, the folder, and the folder that holds it to the
        disk, so that it survives a crash.

    Yields
    ------
    pathlib.Path
        The empty staging folder; it is published when the block ends without error.

    Raises
    ------
    OSError
        The staging folder cannot be created, written or renamed (it is removed, ``final``
        is left as it was); so is any error raised in the block, Ctrl-C included.
    """
    final = Path(final)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMPORARY}{final.name}-", dir=final.parent))
    trash = None
    try:
        yield staging
        publish(staging)
        if fsync:
            for path in staging.rglob("*"):
                if path.is_file():
                    _fsync(path)
            _fsync_folder(staging)
        if replace and final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f"{TEMPORARY}{final.name}-", dir=final.parent))
            with contextlib.suppress(FileNotFoundError):
                os.replace(final, trash / final.name)
        try:
            os.replace(staging, final)
        except OSError:
            if not final.is_dir():
                raise
            # published by another process meanwhile: keep that one
            shutil.rmtree(staging, ignore_errors=True)
        if fsync:
            _fsync_folder(final.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def check_writable(path: str | Path) -> None:
    """Check that a folder can be made at ``path`` (or exists) and written in, leaving
    nothing behind: the missing folders are created, a file is written in the deepest, and
    all of it is removed again.

    Parameters
    ----------
    path : str or Path
        The folder a run will write to.

    Raises
    ------
    OSError
        ``path`` (or a folder above it) cannot be created, is a file, or cannot be written
        in; the message names the path and the reason (``[Errno 2] No such file or
        directory: '/proc/x'``).
    """
    path = Path(path).expanduser().absolute()
    missing = [p for p in (path, *path.parents) if not p.exists()]
    created: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path))
        with tempfile.TemporaryFile(dir=path, prefix=TEMPORARY):
            pass
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
