"""The AP's side of a run after a completed round, so that an interrupted run can resume.

A checkpoint holds what the next round needs and what the tables report: the
AP's state (``F, Z, U``, or one set per user), the number of the completed
round, the history, failures and overhead ledger so far, and the settings it
was made with. Every random draw of the project is a function of the seed and
the round (:mod:`common.maths.seeding`), so no generator position needs saving.
Users keep nothing between rounds that the next round's pilots do not rebuild
(the G step is closed form), which is why the AP's state alone suffices.

It is one ``.npz`` file, written to a temporary name and renamed over the
previous one, so a crash while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from common.files import atomic_file
from common.run.settings import RunSettings, stored_identity

CHECKPOINT_FILE = "checkpoint.npz"
_STATE = "state."  # array names in the file: the AP's state, and the record as JSON
_RECORD = "record"
_DEPLOYMENT = "deployment."  # the deployment phase's arrays


class CheckpointError(ValueError):
    """No usable checkpoint: missing, unreadable, or made with other settings."""


def _identity(settings: RunSettings) -> dict[str, Any]:
    """The settings that decide the numbers (how a run is executed may change on resume)."""
    return settings.identity()


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the values that differ between two settings dictionaries (a setting
    the old one lacks is newer than the checkpoint: it cannot say what the run used)."""
    names = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += _differences(a, b, f"{prefix}{key}.")
        elif key not in old:
            names.append(f"{prefix}{key} (not in the checkpoint, {b!r} now)")
        elif a != b:
            names.append(f"{prefix}{key} ({a!r} in the checkpoint, {b!r} now)")
    return names


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """The state after round ``round`` of the run configured by ``settings`` (JSON)."""

    round: int
    settings: str
    ap_state: dict[str, np.ndarray]
    history: list[dict[str, float]]
    failures: list[dict[str, object]]
    ledger: list[tuple[str, int, int, str, int, int]]
    ap_metrics: dict[str, float]
    # the experiment tracker's run (Tracker.ref: "<backend>:<run id>"), continued on resume
    tracker: str = ""
    # after a deployment slot (tracking.*): the slots done, the evaluation, the slots'
    # rows and the users' last G fits (JSON), and the pilots of those fits (arrays)
    deployment: dict[str, Any] = dataclasses.field(default_factory=dict)
    deployment_arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def write(self, folder: str | Path) -> Path:
        """Replace the checkpoint in ``folder`` atomically; returns its path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "round": self.round,
            "settings": self.settings,
            "history": self.history,
            "failures": self.failures,
            "ledger": self.ledger,
            "ap_metrics": self.ap_metrics,
            "tracker": self.tracker,
            "deployment": self.deployment,
        }
        arrays = {_STATE + name: value for name, value in self.ap_state.items()}
        arrays |= {_DEPLOYMENT + name: value for name, value in self.deployment_arrays.items()}
        arrays[_RECORD] = np.array(json.dumps(record))
        final = folder / CHECKPOINT_FILE
        with atomic_file(final, fsync=True) as out:
            np.savez(out, **arrays)
        return final

    @classmethod
    def read(cls, folder: str | Path) -> Checkpoint:
        path = Path(folder) / CHECKPOINT_FILE
        if not path.is_file():
            finished = (Path(folder) / "results.parquet").is_file()
            raise CheckpointError(
                f"no checkpoint {path}: "
                + (
                    "the run in this folder finished (nothing to resume)"
                    if finished
                    else "expected the output folder of an interrupted run, after its first round"
                )
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                record = json.loads(str(data[_RECORD]))
                state = {k[len(_STATE) :]: data[k] for k in data.files if k.startswith(_STATE)}
                deployed = {
                    k[len(_DEPLOYMENT) :]: data[k] for k in data.files if k.startswith(_DEPLOYMENT)
                }
            return cls(
                round=int(record["round"]),
                settings=str(record["settings"]),
                ap_state=state,
                history=list(record["history"]),
                failures=list(record["failures"]),
                ledger=[tuple(row) for row in record["ledger"]],
                ap_metrics=dict(record["ap_metrics"]),
                tracker=str(record.get("tracker", "")),  # "" in checkpoints before trackers
                deployment=dict(record.get("deployment", {})),
                deployment_arrays=deployed,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from exc

    @staticmethod
    def completed(folder: str | Path | None) -> int:
        """The round after which the checkpoint in ``folder`` was made; 0 when there is no
        readable one (only its record is read, not the AP's state)."""
        if folder is None:
            return 0
        path = Path(folder) / CHECKPOINT_FILE
        try:
            with np.load(path, allow_pickle=False) as data:
                return int(json.loads(str(data[_RECORD]))["round"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    @staticmethod
    def slots_done(folder: str | Path | None) -> int:
        """The deployment slots done when the checkpoint in ``folder`` was made; 0 when it
        was made in training, or there is no readable one."""
        if folder is None:
            return 0
        try:
            with np.load(Path(folder) / CHECKPOINT_FILE, allow_pickle=False) as data:
                return int(json.loads(str(data[_RECORD])).get("deployment", {}).get("slot", 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0

    def check_settings(self, settings: RunSettings, folder: str | Path) -> None:
        """Refuse to resume a run configured differently from the one checkpointed."""
        try:
            stored = stored_identity(self.settings)
        except ValueError as exc:
            raise CheckpointError(f"the checkpoint in {folder} holds no settings: {exc}") from None
        differ = _differences(stored, _identity(settings))
        if differ:
            raise CheckpointError(
                f"the checkpoint in {folder} was made with another config: "
                + "; ".join(differ)
                + ". Resume with the interrupted run's config, or start "
                "a new run in another folder"
            )


def remove_checkpoint(folder: str | Path) -> None:
    """Drop the checkpoint of a run whose outcome is written (it is finished)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path(folder) / CHECKPOINT_FILE)
