"""One copy per machine: the shelf that a simulation's processes share users' inputs through."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from clients.client_app import SharedUsers, default_user
from clients.shelf import Shelf
from common.assets.source import AssetSource
from common.files import TEMPORARY, locked
from common.maths.conventions import Conventions
from common.parties.consensus import AdmmUser
from common.parties.feature_selection import FeatureMapUser
from common.parties.user import PreparedData
from common.run.settings import RunSettings
from common.run.sources import SyntheticSource
from conf import settings as configured
from launch.simulation import OWNER, SHELF_PREFIX, remove_orphan_shelves, user_shelf
from tests.synthetic import settings_for

SOURCE = SyntheticSource(n=300, n_test=60, ap_dim=12, user_dims=(10, 7), classes=3)


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "complex": rng.standard_normal((5, 7)) + 1j * rng.standard_normal((5, 7)),
        "single": rng.standard_normal((4, 3)).astype(np.float32),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 3)),
    }


class _Counted:
    """A build that records every call (in a file, so other processes' calls count)."""

    def __init__(self, log: Path, seconds: float = 0.0):
        self.log, self.seconds = log, seconds

    def __call__(self) -> dict[str, np.ndarray]:
        with open(self.log, "a") as out:
            out.write(f"{os.getpid()}\n")
        time.sleep(self.seconds)
        return _arrays()

    def calls(self) -> int:
        return len(self.log.read_text().split()) if self.log.exists() else 0


def test_an_object_is_built_once_and_mapped_read_only_by_every_reader(tmp_path):
    build = _Counted(tmp_path / "calls")
    first = Shelf(tmp_path).get("user 0", build)
    again = Shelf(tmp_path).get("user 0", build)  # another process's shelf: maps, never builds
    assert build.calls() == 1
    for name, value in _arrays().items():
        np.testing.assert_array_equal(again[name], value)
        assert again[name].dtype == value.dtype and not again[name].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first["complex"][0, 0] = 0
    assert Shelf(tmp_path).get("user 1", build) is not None and build.calls() == 2


def _get_in_child(root: str, log: str, queue) -> None:
    value = Shelf(root).get("shared", _Counted(Path(log), seconds=0.5))
    maps = Path("/proc/self/maps").read_text()
    queue.put((float(np.abs(value["complex"]).sum()), "buffers.bin" in maps))


def test_concurrent_processes_build_once_and_all_map_the_same_file(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    log = tmp_path / "calls"
    children = [
        context.Process(target=_get_in_child, args=(str(tmp_path), str(log), queue))
        for _ in range(4)
    ]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert _Counted(log).calls() == 1
    expected = float(np.abs(_arrays()["complex"]).sum())
    assert results == [(expected, True)] * 4  # equal values, mapped rather than copied
    assert not list(tmp_path.glob(f"{TEMPORARY}*"))  # nothing half-written is left


def test_what_cannot_be_shared_is_kept_by_the_process_with_one_warning(tmp_path, caplog):
    shelf = Shelf(tmp_path)
    with caplog.at_level(logging.WARNING):
        first = shelf.get("closure", lambda: lambda z: z)
        assert shelf.get("closure", lambda: pytest.fail("built twice")) is first
        gone = Shelf(tmp_path / "removed")  # its folder is gone (the run ended)
        np.testing.assert_array_equal(gone.get("k", _arrays)["single"], _arrays()["single"])
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # nothing published
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot be pickled" in m for m in messages)
    assert any("each process keeps its own copy" in m and "removed" in m for m in messages)


def test_a_simulation_shelf_is_removed_at_the_end_and_orphans_are_swept(tmp_path):
    orphan, live, fresh, stale = (tmp_path / f"{SHELF_PREFIX}{n}-x" for n in (1, 2, 3, 4))
    for folder in (orphan, live, fresh, stale):
        folder.mkdir()
    (orphan / OWNER).touch()  # its owner died: nobody holds the lock
    os.utime(stale, (time.time() - 120,) * 2)  # no owner file for two minutes
    with locked(live / OWNER):  # a running owner (any PID namespace)
        assert sorted(remove_orphan_shelves(tmp_path)) == [orphan, stale]
    assert live.exists() and fresh.exists()  # fresh: being created
    with user_shelf() as shelf:
        root = shelf.root
        shelf.get("user", _arrays)
        assert root.name.startswith(f"{SHELF_PREFIX}{os.getpid()}-") and any(root.iterdir())
    assert not root.exists()


def _point_settings(**changes) -> RunSettings:
    return settings_for(SOURCE.problem(), rounds=2, **changes)


def test_a_process_gets_one_shelf_per_folder_back_so_its_user_cache_holds(tmp_path):
    shelf = Shelf(tmp_path)
    shelf.get("user", _arrays)
    first, second = pickle.loads(pickle.dumps(shelf)), pickle.loads(pickle.dumps(shelf))
    assert first is second and first == shelf  # what it mapped stays mapped
    # Ray unpickles the app for every message: the factory must still find cached users
    assert pickle.loads(pickle.dumps(SharedUsers(shelf))) == SharedUsers(first)


def test_what_one_process_could_not_publish_the_others_build_without_waiting(tmp_path):
    build = _Counted(tmp_path / "calls")
    shelf = Shelf(tmp_path / "shelf")
    (tmp_path / "shelf").mkdir()
    shelf._publish = lambda entry, value: False  # e.g. the shared memory is full
    shelf.get("k", build)
    assert list((tmp_path / "shelf").glob("*.unshared"))  # marked for the others
    other = Shelf(tmp_path / "shelf")
    lock = next((tmp_path / "shelf").glob("*.lock"))
    got = []
    with locked(lock):  # the lock is busy: the other must not wait on it
        waiter = threading.Thread(target=lambda: got.append(other.get("k", build)), daemon=True)
        waiter.start()
        waiter.join(timeout=30)
        assert not waiter.is_alive(), "waited for the lock of an entry marked unshared"
    np.testing.assert_array_equal(got[0]["single"], _arrays()["single"])
    assert build.calls() == 2


def test_an_error_of_the_build_itself_is_raised_not_taken_for_the_shelf(tmp_path, caplog):
    def broken():
        raise FileNotFoundError("no latents for user 3")

    with caplog.at_level(logging.WARNING), pytest.raises(FileNotFoundError, match="user 3"):
        Shelf(tmp_path).get("k", broken)
    assert not caplog.records


def test_users_from_the_shelf_equal_users_built_alone_and_points_share_one_copy(tmp_path):
    shelf = Shelf(tmp_path)
    points = [_point_settings(snr_db=snr, channel_uses=uses) for snr, uses in ((10, 2), (30, 4))]
    for settings in points:
        for index in range(SOURCE.num_users):
            shared = default_user(index, SOURCE, settings, shelf)
            alone = default_user(index, SOURCE, settings)
            assert not shared._y_bar.flags.writeable
            np.testing.assert_array_equal(shared._y_bar, alone._y_bar)
            np.testing.assert_array_equal(shared.h_block, alone.h_block)
            assert shared.n_pilots == alone.n_pilots and shared.dim == alone.dim
    entries = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(entries) == SOURCE.num_users  # one per user, whatever the points
    baseline = _point_settings(**{"strategy.name": "top_k"})  # another user class prepares its own
    default_user(0, SOURCE, baseline, shelf)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == SOURCE.num_users + 1


def test_prepared_inputs_are_refused_by_a_user_they_were_not_made_for():
    data = SOURCE.user_data(0)
    settings = _point_settings()
    prepared = AdmmUser.prepare(0, data, Conventions("corrected"))
    assert isinstance(prepared, PreparedData)
    with pytest.raises(ValueError, match="prepared by AdmmUser.derive, but FeatureMapUser needs"):
        FeatureMapUser(0, prepared, settings.link, settings.seed)
    with pytest.raises(ValueError, match="unbiased_covariance"):
        AdmmUser(0, prepared, settings.link, settings.seed, conventions=Conventions("paper"))


def test_an_asset_users_key_names_its_data_and_nothing_else():
    base = configured("experiment.progress=false")
    key = AssetSource(base).user_key(1)
    same = [
        base.replace(
            rounds=3, **{"strategy.name": "multi_link"}, snr_db=5.0, rho=2.0, **{"faults.users": 1}
        ),
        base.replace(models=(*base.users.models[:2], *base.users.models[:2])),
    ]
    for settings in same:
        assert AssetSource(settings).user_key(1) == key
    differ = [
        base.replace(seed=base.seed + 1),
        base.replace(pilot_fraction=0.5),
        base.replace(head_seed=base.users.head_seed + 1),
        base.replace(split_seed=7),
        base.replace(cache_dir="/elsewhere"),
        base.replace(weights_dir="/weights"),
        base.replace(**{"latents.precision": "bf16"}),
    ]
    for settings in differ:
        assert AssetSource(settings).user_key(1) != key
    assert AssetSource(base).user_key(0) != key  # another model
    # the scopes declared on the settings name exactly these as a user's data
    assert set(RunSettings.keys(lambda scope: scope.names_data)) == {
        "data.name",
        "data.root",
        "data.split_seed",
        "data.pilot_fraction",
        "users.zoo",
        "users.head_seed",
        "seed",
        "cache_dir",
        "weights_dir",
        "latents.precision",
    }
