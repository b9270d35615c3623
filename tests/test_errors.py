"""Errors that cross a process boundary: raised in a worker, reported by its parent.

Every exception class the project defines must come back from ``pickle`` (how a
process pool and Ray return a worker's exception) as itself, with the same message
and attributes; otherwise the parent gets an unrelated ``TypeError`` or
``AttributeError`` and a broken pool instead of the reason.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pandas as pd
import pytest

from clients.device import DeviceConfigError
from common.assets.cache import CacheError, _CorruptEntry
from common.assets.data import DatasetNotFoundError
from common.assets.devices import DeviceError
from common.assets.encoders import UnknownModelError, WeightsNotFoundError
from common.maths.validation import InvalidValue
from common.run.checkpoint import CheckpointError
from common.run.results import NoResults
from common.run.settings import ConfigError
from launch.errors import Refused
from launch.federation import FederationError
from launch.simulation import SimulationFailed
from server.nodes import NodeRefused, UsersNotConnected
from server.sweep import PointsFailed

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "server", "clients", "launch", "transport", "conf")

FAILURES = pd.DataFrame(
    {
        "round": [1, 2, 2],
        "stage": ["train", "train", "train"],
        "user": [0, 0, 1],
        "reason": ["RuntimeError: early", "RuntimeError: late", "no reply"],
    }
)

# one instance of every exception class the project defines
EXAMPLES = [
    InvalidValue("communication.snr", "communication.snr must be finite, got nan"),
    UnknownModelError("no model 'resnet9000'"),
    WeightsNotFoundError("no weights for vit_small_p16 in /data/weights"),
    DatasetNotFoundError("cifar10 is not in /data"),
    CacheError("the cache folder /proc/x cannot be written"),
    DeviceError("config key 'device' = 'cuda': this machine has only the CPU"),
    _CorruptEntry("checksum mismatch"),
    ConfigError("config key 'users.count' = 0 is invalid"),
    NoResults(FAILURES),
    CheckpointError("the checkpoint belongs to another run"),
    UsersNotConnected("users [3] did not connect within 120 s"),
    NodeRefused("node 7 cannot serve this run: wrong model"),
    PointsFailed("2 of 5 points failed"),
    DeviceConfigError("node config lacks partition-id"),
    SimulationFailed("the Flower simulation ended without results"),
    Refused("error: config key 'seed' = -1 is invalid", Path("/data/runs/r1")),
    FederationError("the SuperLink did not start"),
]


def _defined_exception_classes() -> set[str]:
    """``module.Class`` of every class defined in the project whose bases name an
    exception (read from the source, so a new one cannot be missed)."""
    names = {type(e).__name__ for e in EXAMPLES} | {"Exception", "ValueError"}
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.ClassDef):
                    continue
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                if bases & (names | {"RuntimeError", "FileNotFoundError", "OSError", "SystemExit"}):
                    found.add(f"{path.relative_to(ROOT).with_suffix('')}.{node.name}")
    return {name.replace("/", ".") for name in found}


def test_every_exception_class_of_the_project_has_an_example():
    covered = {f"{type(e).__module__}.{type(e).__name__}" for e in EXAMPLES}
    assert _defined_exception_classes() <= covered


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_an_exception_survives_pickling_with_its_message_and_attributes(error):
    error.add_note("point 2 had failed")  # notes travel too
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error) and copy.args == error.args
    assert copy.__dict__ == error.__dict__


def test_every_user_failed_names_each_users_last_failure_in_the_parent_process():
    from launch.environment import worker_pool

    with worker_pool(1) as pool, pytest.raises(NoResults) as info:
        pool.submit(_raise_no_results).result()
    message = str(info.value)
    assert message.startswith("every user failed, so the run has no results")
    assert "user 0 (train, round 2): RuntimeError: late" in message
    assert "user 1 (train, round 2): no reply" in message and "early" not in message


def _raise_no_results() -> None:
    raise NoResults(FAILURES)
