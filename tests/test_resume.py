"""AP checkpoints: a run killed mid-way and resumed ends exactly where an uninterrupted one
does; a checkpoint of another config, or a folder without one, is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import MessageType

from clients.client_app import make_client_app
from common.run.checkpoint import CHECKPOINT_FILE, Checkpoint, CheckpointError
from common.run.results import RunOutcome
from server.sweep import WriteTo, run_point, run_points
from tests.synthetic import settings_for
from tests.test_apps import SOURCE, _client_grid

pytestmark = pytest.mark.usefixtures("task_identity")  # Flower messages need a run identity


class Killed(BaseException):
    """The AP process dies (not an error the run could record)."""


def _crashing_grid(app, at_round: int):
    """A grid whose AP 'dies' when it sends the pilots of ``at_round``."""
    grid = _client_grid(app)
    send = grid.send_and_receive

    def send_and_receive(messages, *, timeout=None):
        messages = list(messages)
        train = [m for m in messages if m.metadata.message_type == MessageType.TRAIN]
        if train and int(train[0].metadata.group_id) == at_round:
            raise Killed(f"killed in round {at_round}")
        return send(messages, timeout=timeout)

    grid.send_and_receive = send_and_receive
    return grid


KMEANS = {"strategy.grouping": "kmeans", "strategy.clusters": 2, "strategy.regroup_every": 2}


@pytest.mark.parametrize(
    ("method", "options"), [("federated", {}), ("multi_link", {}), ("clustered", KMEANS)]
)
def test_a_killed_run_resumes_after_its_last_completed_round(tmp_path, method, options):
    problem = SOURCE.problem()
    run = settings_for(
        problem,
        **{"strategy.name": method, **options},
        rounds=5,
        channel_uses=2,
        seed=5,
        participation=0.7,
    )
    run_point(_client_grid(make_client_app(None, SOURCE)), run, WriteTo(tmp_path / "whole"), SOURCE)
    whole = RunOutcome.load(tmp_path / "whole")
    assert not (tmp_path / "whole" / CHECKPOINT_FILE).exists()  # finished: nothing to resume

    folder = tmp_path / "killed"
    with pytest.raises(Killed):
        run_point(_crashing_grid(make_client_app(None, SOURCE), 4), run, WriteTo(folder), SOURCE)
    assert Checkpoint.read(folder).round == 3
    # a new AP and new user processes (nothing of the killed run in memory)
    grid = _client_grid(make_client_app(None, SOURCE))
    run_point(grid, run.replace(resume=True), WriteTo(folder), SOURCE)
    resumed = RunOutcome.load(folder)
    trained = {
        int(m.metadata.group_id) for m in grid.sent if m.metadata.message_type == MessageType.TRAIN
    }
    assert trained == {4, 5}  # rounds 1-3 were not run again
    for name, value in whole.precoders.items():
        np.testing.assert_allclose(resumed.precoders[name], value, rtol=1e-12)
    np.testing.assert_array_equal(resumed.results.accuracy, whole.results.accuracy)
    assert resumed.history["round"].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(resumed.history.objective, whole.history.objective, rtol=1e-10)
    for column in ("bytes_down", "group", "stream_bytes_down", "channel_uses_down"):
        assert resumed.results[column].tolist() == whole.results[column].tolist(), column
    for column in ("groups", "streams_down", "stream_bytes_down", "trimmed_per_end"):
        assert resumed.history[column].tolist() == whole.history[column].tolist(), column
    assert not (folder / CHECKPOINT_FILE).exists()


def test_resume_refuses_another_config_a_folder_without_checkpoint_and_a_finished_run(tmp_path):
    problem = SOURCE.problem()
    run = settings_for(problem, **{"strategy.name": "federated"}, rounds=4, channel_uses=2, seed=5)
    folder = tmp_path / "killed"
    with pytest.raises(Killed):
        run_point(_crashing_grid(make_client_app(None, SOURCE), 3), run, WriteTo(folder), SOURCE)
    grid = _client_grid(make_client_app(None, SOURCE))
    other = run.replace(resume=True, snr_db=7.0, rho=2.0)
    with pytest.raises(
        CheckpointError,
        match=r"another config: communication\.snr \(20\.0 in the "
        r"checkpoint, 7\.0 now\); strategy\.rho \(1\.0 in the checkpoint, 2\.0 now\)",
    ):
        run_point(grid, other, WriteTo(folder), SOURCE)
    # how a run is executed may change on resume (progress, timeouts, ...)
    run_point(grid, run.replace(resume=True, round_timeout=99.0), WriteTo(folder), SOURCE)
    with pytest.raises(CheckpointError, match="the run in this folder finished"):
        run_point(grid, run.replace(resume=True), WriteTo(folder), SOURCE)
    with pytest.raises(CheckpointError, match=r"no checkpoint .*empty.*interrupted run"):
        run_point(grid, run.replace(resume=True), WriteTo(tmp_path / "empty"), SOURCE)


def test_a_checkpoint_is_replaced_atomically_and_a_damaged_one_is_named(tmp_path):
    state = {"F": np.ones((2, 3), complex)}
    first = Checkpoint(1, "{}", state, [{"round": 1.0}], [], [("train", 1, 0, "down", 8)], {})
    first.write(tmp_path)
    second = Checkpoint(2, "{}", state, [{"round": 1.0}, {"round": 2.0}], [], [], {"power": 1.0})
    second.write(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary left
    back = Checkpoint.read(tmp_path)
    assert back.round == 2 and back.ap_metrics == {"power": 1.0}
    np.testing.assert_array_equal(back.ap_state["F"], state["F"])
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="is unreadable"):
        Checkpoint.read(tmp_path)


@pytest.mark.slow
def test_a_killed_simulation_resumes_through_the_command_line(tmp_path, cache_dir):
    """run_simulation.py is killed (its whole process group, Ray included) after a
    checkpoint; started again with experiment.resume=true in the same folder, it ends with
    the precoders and accuracies of the run done in one go."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from common.assets.source import AssetSource
    from common.run.driver import run_experiment
    from conf import settings

    root = Path(__file__).resolve().parents[1]
    overrides = [
        "users.count=3",
        "experiment.rounds=6",
        "experiment.progress=false",
        f"cache_dir={cache_dir}",
    ]
    folder = tmp_path / "run"
    command = [
        sys.executable,
        str(root / "run_simulation.py"),
        *overrides,
        f"hydra.run.dir={folder}",
    ]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not (folder / CHECKPOINT_FILE).exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = Checkpoint.read(folder).round
    assert 1 <= killed_at < 6 and not (folder / "results.parquet").exists()

    resumed = subprocess.run(
        [*command, "experiment.resume=true"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    outcome = RunOutcome.load(folder)
    run = settings(*overrides)
    whole = run_experiment(AssetSource(run).problem(), run)
    for name, value in whole.precoders.items():  # BLAS threads differ: tiny entries wobble
        np.testing.assert_allclose(
            outcome.precoders[name], value, rtol=1e-9, atol=1e-10 * np.abs(value).max()
        )
    np.testing.assert_array_equal(outcome.results.accuracy, whole.results.accuracy)
    assert outcome.history["round"].tolist() == list(range(1, 7))

    again = subprocess.run(
        [*command, "experiment.resume=true"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 1
    assert "experiment.resume' = true: no checkpoint" in again.stderr
    assert "the run in this folder finished" in again.stderr


def test_an_interrupted_sweep_resumes_its_unfinished_points_from_their_journals(tmp_path):
    """Three points in lockstep are killed in round 4: each point's rounds and checkpoint are in
    the store's journal; the sweep started again finishes them from round 4 with the numbers
    of an uninterrupted sweep, and the journals are gone."""
    from common.run.points import PointStore

    problem = SOURCE.problem()
    base = settings_for(problem, **{"strategy.name": "federated"}, rounds=5, channel_uses=2, seed=5)
    points = [base, base.replace(seed=6), base.replace(**{"strategy.name": "multi_link"})]
    whole = PointStore(tmp_path / "whole")
    run_points(_client_grid(make_client_app(None, SOURCE)), points, whole, SOURCE, in_flight=8)

    store = PointStore(tmp_path / "store")
    with pytest.raises(Killed):
        run_points(
            _crashing_grid(make_client_app(None, SOURCE), 4), points, store, SOURCE, in_flight=8
        )
    for point in points:
        assert not store.finished(point)
        assert Checkpoint.read(store.journal(point)).round == 3
        assert len((store.journal(point) / "history.csv").read_text().splitlines()) == 1 + 3
    grid = _client_grid(make_client_app(None, SOURCE))
    run_points(grid, points, store, SOURCE, in_flight=8)
    trained = {
        int(m.metadata.group_id) for m in grid.sent if m.metadata.message_type == MessageType.TRAIN
    }
    assert trained == {4, 5}
    for point in points:
        done, reference = store.load(point), whole.load(point)
        for name, value in reference.precoders.items():
            np.testing.assert_allclose(done.precoders[name], value, rtol=1e-12)
        np.testing.assert_array_equal(done.results.accuracy, reference.results.accuracy)
        assert done.history["round"].tolist() == [1, 2, 3, 4, 5]
        assert not store.journal(point).exists()


def test_the_last_unfinished_point_of_a_sweep_resumes_from_its_journal_too(tmp_path):
    """A store resumes its points by itself, however many are left: one point killed in
    round 4 goes on from round 4 when the sweep runs again."""
    from common.run.points import PointStore

    problem = SOURCE.problem()
    point = settings_for(
        problem, **{"strategy.name": "federated"}, rounds=5, channel_uses=2, seed=5
    )
    store = PointStore(tmp_path / "store")
    with pytest.raises(Killed):
        run_points(_crashing_grid(make_client_app(None, SOURCE), 4), [point], store, SOURCE)
    assert Checkpoint.read(store.journal(point)).round == 3
    grid = _client_grid(make_client_app(None, SOURCE))
    run_points(grid, [point], store, SOURCE)
    trained = {
        int(m.metadata.group_id) for m in grid.sent if m.metadata.message_type == MessageType.TRAIN
    }
    assert trained == {4, 5} and store.finished(point)
