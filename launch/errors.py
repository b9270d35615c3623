"""One line for a failure the user can act on; the traceback only when asked for.

A refused setting, a missing dataset, an unreachable cluster or a full disk is the
user's to fix: the command line programs print ``error: <what and what to do>`` and
exit 1. ``HYDRA_FULL_ERROR=1`` (Hydra's own switch) shows the whole traceback instead.
Anything else is a bug, and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# the failures a user can act on, by class (matched along the exception's class hierarchy,
# so that reporting one imports none of the modules that raise them)
REPORTED = frozenset(
    {
        "common.run.settings.ConfigError",
        "common.maths.validation.InvalidValue",
        "common.assets.cache.CacheError",
        "common.assets.devices.DeviceError",
        "common.assets.data.DatasetNotFoundError",
        "common.assets.encoders.WeightsNotFoundError",
        "common.assets.encoders.UnknownModelError",
        "common.run.checkpoint.CheckpointError",
        "common.run.results.NoResults",
        "server.nodes.UsersNotConnected",
        "server.nodes.NodeRefused",
        "launch.simulation.SimulationFailed",
        "clients.device.DeviceConfigError",
    }
)
# operating-system failures that are the machine's state, not a bug: a full disk, a quota,
# a read-only or forbidden place
REPORTED_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
FULL_ERROR = "HYDRA_FULL_ERROR"


def reportable(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure the user can act on (:data:`REPORTED`, or an
    :class:`OSError` of :data:`REPORTED_ERRNOS`)."""
    if isinstance(exc, OSError) and exc.errno in REPORTED_ERRNOS:
        return True
    return any(f"{c.__module__}.{c.__qualname__}" in REPORTED for c in type(exc).__mro__)


def one_line(exc: BaseException) -> str:
    """``error: <message>`` (an operating-system failure: what failed, and on which path),
    with the notes added to the exception (what a failed run kept, and where)."""
    notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
    if isinstance(exc, OSError) and exc.errno in REPORTED_ERRNOS and exc.filename:
        verb = "access" if exc.errno in (errno.EACCES, errno.EPERM) else "write"
        return f"error: cannot {verb} {exc.filename}: {exc.strerror}{notes}"
    return f"error: {exc}{notes}"


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Turn a failure the user can act on into one ``error:`` line and exit status 1.

    Raises
    ------
    SystemExit
        Status 1 with :func:`one_line` of the failure (unless ``HYDRA_FULL_ERROR=1``, which
        lets the exception through with its traceback).
    """
    try:
        yield
    except Exception as exc:
        if not reportable(exc) or os.environ.get(FULL_ERROR) == "1":
            raise
        print(one_line(exc), file=sys.stderr, flush=True)
        sys.exit(1)


@contextlib.contextmanager
def refusing(folder: Path | None) -> Iterator[None]:
    """Turn a failure the user can act on (or the memory estimate's refusal), before any
    work, into :class:`Refused`, which puts ``folder`` back as it was; ``folder`` None (a
    sweep's point, whose folder is the sweep's): only one ``error:`` line and exit 1.

    Raises
    ------
    Refused, SystemExit
        With :func:`one_line` of the failure (unless ``HYDRA_FULL_ERROR=1``).
    """
    try:
        yield
    except Exception as exc:
        memory = isinstance(exc, MemoryError)
        if not (memory or reportable(exc)) or os.environ.get(FULL_ERROR) == "1":
            raise
        if folder is None:
            sys.exit(one_line(exc))
        raise Refused(one_line(exc), folder) from None


def check_folder(key: str, value: str, advice: str = "give a folder you can write") -> None:
    """Refuse a folder setting that cannot be written (:func:`common.files.check_writable`,
    which leaves nothing behind), before any work.

    Raises
    ------
    common.run.settings.ConfigError
        ``config key 'sweep_store' = '/proc/x' cannot be written: <reason> (<path>);
        <advice>``.
    """
    from common.files import check_writable
    from common.run.settings import ConfigError

    try:
        check_writable(value)
    except OSError as exc:
        raise ConfigError(
            f"config key {key!r} = {value!r} cannot be written: {exc.strerror or exc} "
            f"({exc.filename or value}); {advice}"
        ) from None


class Refused(SystemExit):
    """A run or sweep refused before any work: exit status 1 with ``error: <message>``;
    the entry point then puts the output folder back as it was (:class:`Untouched`).

    Parameters
    ----------
    message : str
        The one line to print, ``error: ...``.
    folder : Path, optional
        The output folder Hydra made for the run (or the sweep's folder).
    """

    def __init__(self, message: str, folder: Path | None = None) -> None:
        super().__init__(message)
        self.folder = folder

    def __reduce__(self):  # crosses processes whole (SystemExit's would drop the folder)
        return (type(self), (self.code, self.folder), self.__dict__)


# what Hydra writes in a run's folder before the task runs, and in a sweep's folder
HYDRA_FILES = (
    ".hydra/config.yaml",
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
    "multirun.yaml",
)
# Hydra's output folders in conf/config.yaml: a static part, then two time-stamped levels
DEFAULT_DIRS = {"run": "outputs/%Y-%m-%d/%H-%M-%S", "sweep": "multirun/%Y-%m-%d/%H-%M-%S"}


@dataclass
class Untouched:
    """What a run's output folders held before Hydra wrote in them, to put back when the
    run is refused: a refused run changes nothing that existed before it (its config
    record, its log, an empty folder and the folders above it).

    Attributes
    ----------
    existed : set of Path
        The folders (the output folder and the two above it) that existed.
    files : dict of str to bytes or None
        The files Hydra writes in the output folder (relative names) and their contents
        before (None: absent).
    folder : Path or None
        The output folder the command line names (or the default, at this second); None
        when it names one through an interpolation (``${...}``): then nothing is touched.
    default : bool
        The folder is Hydra's default, named by the time (a guess to the second).
    """

    existed: set[Path]
    files: dict[str, bytes | None]
    folder: Path | None
    default: bool = False

    @classmethod
    def take(cls, args: Sequence[str], log_name: str, now: datetime | None = None) -> Untouched:
        """The state of the folder a command line's run (or sweep, ``-m``) will write to.

        Parameters
        ----------
        args : sequence of str
            The command line's arguments (Hydra overrides and flags).
        log_name : str
            The run's log file name (``<script>.log``), which Hydra appends to.
        now : datetime, optional
            The time that names the default folder (default: now).
        """
        kind = "sweep" if {"-m", "--multirun"} & set(args) else "run"
        key = f"hydra.{kind}.dir"
        given = literal_value(args, key)
        last = next((a for a in reversed(args) if a.lstrip("+").startswith(f"{key}=")), None)
        if given is None and last is not None:
            return cls(existed=set(), files={}, folder=None)  # ${...}: not known here
        stamp = (now or datetime.now()).strftime(DEFAULT_DIRS[kind])
        folder = _absolute(given or stamp)
        chain = [folder, folder.parent, folder.parent.parent]
        return cls(
            existed={p for p in chain if p.is_dir()},
            files={
                n: (folder / n).read_bytes() if (folder / n).is_file() else None
                for n in (*HYDRA_FILES, log_name)
            },
            folder=folder,
            default=given is None,
        )

    def restore(self, folder: Path | None = None) -> None:
        """Put back Hydra's files in ``folder`` (default: :attr:`folder`) as they were, and
        remove the folders the run created, if they are empty.

        ``folder`` is the one Hydra made. If it is not the one taken, nothing is touched,
        unless both are Hydra's default, named by the time: the second may have ticked,
        and a folder named by a later second is this run's own."""
        if self.folder is None:
            return
        folder = _absolute(folder or self.folder)
        if folder != self.folder and not (
            self.default and folder.parent.parent == self.folder.parent.parent
        ):
            return
        for name, content in self.files.items():
            path, before = folder / name, content if folder == self.folder else None
            with contextlib.suppress(OSError):
                if before is None:
                    path.unlink(missing_ok=True)
                else:
                    path.write_bytes(before)
        for empty in (folder / ".hydra", folder, folder.parent, folder.parent.parent):
            if empty not in self.existed and empty != Path.cwd():
                with contextlib.suppress(OSError):
                    empty.rmdir()  # only if empty


def _absolute(path: str | Path) -> Path:
    """An absolute path as Hydra makes one (``os.path.abspath``: ``..`` resolved)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def literal_value(args: Sequence[str], key: str) -> str | None:
    """The value a command line gives ``key`` (``key=value``; the last one, as in Hydra), if
    it is a plain path (no ``${...}`` interpolation, no sweep)."""
    for arg in reversed(args):
        name, sep, value = arg.partition("=")
        if sep and name.lstrip("+") == key:
            value = value.strip("'\"")
            return None if "${" in value or not value else value
    return None


def check_output_folder(args: Sequence[str]) -> None:
    """Refuse a ``hydra.run.dir`` / ``hydra.sweep.dir`` that cannot be written, before Hydra
    tries (its own failure is a traceback).

    Raises
    ------
    Refused
        Naming the key, the folder and the reason.
    """
    sweep = bool({"-m", "--multirun"} & set(args))
    for key in ("hydra.sweep.dir",) if sweep else ("hydra.run.dir",):
        value = literal_value(args, key)
        if value is None:
            continue
        try:
            check_folder(key, value)
        except ValueError as exc:  # the ConfigError
            raise Refused(f"error: {exc}") from None
