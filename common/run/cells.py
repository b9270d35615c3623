"""Cells of a study: one experiment each, named by a hash of its settings, stored once done.

A sweep is a list of cells. Each finished cell lives in a :class:`CellStore`
folder named by :func:`cell_key`, written to a temporary folder first and
renamed into place, so a folder that exists is a finished cell and nothing
partial is ever taken for one. A sweep started again skips the cells it finds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path

from common.files import atomic_folder
from common.run.results import RunOutcome
from common.run.settings import RunSettings

SETTINGS_FILE = "settings.json"
JOURNALS = ".journal"  # unfinished cells' rounds, under the store's root (never a cell)


def cell_key(settings: RunSettings) -> str:
    """A stable name for the numbers ``settings`` produce (every setting whose scope says
    it changes them: :meth:`RunSettings.identity`)."""
    text = json.dumps(settings.identity(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CellStore:
    """A folder of finished cells, one sub-folder per :func:`cell_key`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, settings: RunSettings) -> Path:
        return self.root / cell_key(settings)

    def journal(self, settings: RunSettings) -> Path:
        """Where an unfinished cell's rounds and AP checkpoint are written as they finish
        (removed once the cell is saved); a sweep started again resumes the cell there."""
        return self.root / JOURNALS / cell_key(settings)

    def __call__(self, settings: RunSettings, outcome: RunOutcome) -> Path:
        """A finished cell's outcome into the store (the store as a ServerApp sink)."""
        return self.save(settings, outcome)

    def finished(self, settings: RunSettings) -> bool:
        return self.path(settings).is_dir()

    def load(self, settings: RunSettings) -> RunOutcome:
        return RunOutcome.load(self.path(settings))

    def save(self, settings: RunSettings, outcome: RunOutcome) -> Path:
        """Write the outcome and the settings it came from; atomic as a whole."""
        final = self.path(settings)
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_folder(final) as staging:  # a cell finished elsewhere meanwhile is kept
            outcome.save(staging)
            (staging / SETTINGS_FILE).write_text(settings.to_json() + "\n")
        journal = self.journal(settings)
        shutil.rmtree(journal, ignore_errors=True)  # finished: nothing to resume
        with contextlib.suppress(OSError):
            journal.parent.rmdir()  # once no cell is unfinished
        return final
