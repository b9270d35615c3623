"""Points of a study: one experiment each, named by a hash of its settings, stored once done.

A sweep is a list of points. Each finished point lives in a :class:`PointStore`
folder named by :func:`point_key`, written to a temporary folder first and
renamed into place, so a folder that exists is a finished point and nothing
partial is ever taken for one. A sweep started again skips the points it finds.

Stores written by earlier versions still read: the first time a store is opened,
points and journals named by an earlier key are renamed to today's (each
folder keeps the settings it was made with), and the default folder's earlier
name (``cells`` beside ``points``) is taken over (:func:`upgrade_store`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from common.files import atomic_folder
from common.run.checkpoint import Checkpoint, CheckpointError
from common.run.results import RunOutcome
from common.run.settings import RunSettings, stored_identity

logger = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
JOURNALS = ".journal"  # unfinished points' rounds, under the store's root (never a point)
TRACKED = "tracked"  # the points' TensorBoard and W&B files (logger=...), under the root
OLD_NAME, NAME = "cells", "points"  # the default store folder's earlier and present names


def _key(identity: dict) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def point_key(settings: RunSettings) -> str:
    """A stable name for the numbers ``settings`` produce (every setting whose scope says
    it changes them: :meth:`RunSettings.identity`)."""
    return _key(settings.identity())


def upgrade_store(root: str | Path) -> list[tuple[str, str]]:
    """Bring a store written by an earlier version to today's names; the renames made.

    A folder ``points`` that does not exist takes over a ``cells`` folder beside it (the
    default store's earlier name) when that holds points. A point or journal (a folder
    named by a key: 16 hex digits) whose stored settings name another key is renamed to
    that key, unless a folder of that key exists; any other folder, and one whose
    settings cannot be read as settings, is left as it is. Renames are atomic, so
    processes that open the store at once do no harm; a process looks again only when
    the store's folder has changed since it last looked.
    """
    root = Path(root)
    old = root.with_name(OLD_NAME)
    if not root.exists() and root.name == NAME and old.is_dir() and any(_stored(old)):
        with contextlib.suppress(OSError):  # another process took it over meanwhile
            os.rename(old, root)
            logger.warning("the point store %s was called %s before: renamed", root, old.name)
    try:
        seen = (str(root.resolve()), root.stat().st_mtime_ns)
    except OSError:
        return []
    if seen in _LOOKED_AT:
        return []
    renamed = []
    for folder, settings in _stored(root):
        try:
            key = _key(stored_identity(settings))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not settings this version can read: left as it is
        if key != folder.name and not (folder.parent / key).exists():
            with contextlib.suppress(OSError):  # renamed by another process meanwhile
                os.rename(folder, folder.parent / key)
                renamed.append((folder.name, key))
    with contextlib.suppress(OSError):
        _LOOKED_AT.add((str(root.resolve()), root.stat().st_mtime_ns))
    if renamed:
        logger.warning(
            "the point store %s was written by an earlier version: %d points "
            "renamed to today's keys",
            root,
            len(renamed),
        )
    return renamed


_LOOKED_AT: set[tuple[str, int]] = set()  # stores this process has brought up to date


def _is_key(name: str) -> bool:
    return len(name) == 16 and all(c in "0123456789abcdef" for c in name)


def _stored(root: Path):
    """Every point and journal folder of a store (named by a key), with the settings (JSON)
    it was made with."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _is_key(p.name)):
        with contextlib.suppress(OSError):
            yield folder, (folder / SETTINGS_FILE).read_text()
    journals = root / JOURNALS
    for folder in sorted(journals.iterdir()) if journals.is_dir() else ():
        if _is_key(folder.name):
            with contextlib.suppress(CheckpointError):
                yield folder, Checkpoint.read(folder).settings


class PointStore:
    """A folder of finished points, one sub-folder per :func:`point_key`; as a sweep's sink,
    an unfinished point resumes from its journal by itself (:attr:`resumes`)."""

    resumes = True

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._upgraded = False

    def _open(self) -> Path:
        """The root, after bringing a store of an earlier version up to date (once)."""
        if not self._upgraded:
            upgrade_store(self.root)
            self._upgraded = True
        return self.root

    def path(self, settings: RunSettings) -> Path:
        return self._open() / point_key(settings)

    def journal(self, settings: RunSettings) -> Path:
        """Where an unfinished point's rounds and AP checkpoint are written as they finish
        (removed once the point is saved); a sweep started again resumes the point there."""
        return self._open() / JOURNALS / point_key(settings)

    def outputs(self, settings: RunSettings) -> Path:
        """Where a point's experiment tracker writes its files (TensorBoard's events, W&B's
        run folder): ``<root>/tracked/<key>``, kept when the point is saved, so that
        ``tensorboard --logdir <root>/tracked`` shows every point."""
        return self._open() / TRACKED / point_key(settings)

    def __call__(self, settings: RunSettings, outcome: RunOutcome) -> Path:
        """A finished point's outcome into the store (the store as a ServerApp sink)."""
        return self.save(settings, outcome)

    def finished(self, settings: RunSettings) -> bool:
        return self.path(settings).is_dir()

    def load(self, settings: RunSettings) -> RunOutcome:
        return RunOutcome.load(self.path(settings))

    def save(self, settings: RunSettings, outcome: RunOutcome) -> Path:
        """Write the outcome and the settings it came from; atomic as a whole."""
        final = self.path(settings)
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_folder(final) as staging:  # a point finished elsewhere meanwhile is kept
            outcome.save(staging)
            (staging / SETTINGS_FILE).write_text(settings.to_json() + "\n")
        journal = self.journal(settings)
        shutil.rmtree(journal, ignore_errors=True)  # finished: nothing to resume
        with contextlib.suppress(OSError):
            journal.parent.rmdir()  # once no point is unfinished
        return final
