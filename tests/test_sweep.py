"""Sweeps: points back to back in one simulation, each equal to itself run alone, resumable."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.run.driver import run_experiment
from common.run.points import PointStore, point_key
from common.run.sources import SyntheticSource
from launch.simulation import SimulationFailed, simulate, simulate_sweep
from tests.synthetic import settings_for

ROOT = Path(__file__).resolve().parents[1]
SOURCE = SyntheticSource(n=300, n_test=100, ap_dim=16, user_dims=(18, 11, 13))
BASE = settings_for(SOURCE.problem(), rounds=3, channel_uses=2, seed=7)
POINTS = [
    BASE,
    BASE.replace(**{"strategy.name": "multi_link"}, seed=8),
    BASE.replace(**{"strategy.name": "top_k"}, channel_uses=1),
]


def _same(a, b, rtol=1e-12):
    assert set(a.precoders) == set(b.precoders)
    for name, value in a.precoders.items():
        np.testing.assert_allclose(b.precoders[name], value, rtol=rtol, atol=1e-14)
    assert a.results.accuracy.tolist() == b.results.accuracy.tolist()
    np.testing.assert_allclose(a.results.mse, b.results.mse, rtol=rtol)
    for column in ("bytes_down", "bytes_up", "messages", "channel_usage_effective"):
        assert a.results[column].tolist() == b.results[column].tolist(), column


def test_point_keys_follow_what_changes_the_numbers():
    assert point_key(BASE) == point_key(BASE.replace(progress=True, cpus_per_user=2.0))
    assert len({point_key(c) for c in POINTS}) == len(POINTS)
    assert point_key(BASE) != point_key(BASE.replace(snr_db=10.0))


@pytest.mark.slow
def test_a_sweep_runs_in_one_simulation_and_each_point_equals_itself_alone(tmp_path):
    store = PointStore(tmp_path / "points")
    outcomes = simulate_sweep(POINTS, store, SOURCE)
    assert [p.name for p in sorted(store.root.iterdir())] == sorted(point_key(c) for c in POINTS)
    for point, outcome in zip(POINTS, outcomes, strict=True):
        _same(run_experiment(SOURCE.problem(), point), outcome)
        assert (store.path(point) / "settings.json").read_text().strip() == point.to_json()
    _same(simulate(POINTS[1], SOURCE), outcomes[1])  # the same point in a simulation of its own


@pytest.mark.slow
def test_an_interrupted_sweep_keeps_finished_points_and_redoes_only_the_rest(tmp_path):
    store = PointStore(tmp_path / "points")
    broken = BASE.replace(
        models=BASE.users.models[:2], seed=9
    )  # the AP refuses it: 3 users in source
    with pytest.raises(SimulationFailed, match="1 point.*3 users but the settings name 2"):
        simulate_sweep([POINTS[0], broken, POINTS[1]], store, SOURCE)
    # the failed point did not stop the sweep; it alone is missing
    assert store.finished(POINTS[0]) and store.finished(POINTS[1])
    assert not store.finished(broken)
    (store.root / f".{point_key(POINTS[2])}.partial").mkdir()  # debris of a killed writer
    kept = [(store.path(c) / "results.parquet").stat().st_mtime_ns for c in POINTS[:2]]
    outcomes = simulate_sweep(POINTS, store, SOURCE)
    again = [(store.path(c) / "results.parquet").stat().st_mtime_ns for c in POINTS[:2]]
    assert again == kept  # finished points are not redone
    assert all(store.finished(point) for point in POINTS)
    _same(run_experiment(SOURCE.problem(), POINTS[2]), outcomes[2])


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": "ray://127.0.0.1:1"} if "bad" in args[0] else None
    return subprocess.run(
        [sys.executable, str(ROOT / "run_simulation.py"), *args[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_bad_sweep_value_stops_every_point_before_ray_starts(tmp_path):
    proc = _cli(
        "bad",
        "communication.channel_usage=1,0",
        f"sweep_store={tmp_path}/points",
        f"hydra.sweep.dir={tmp_path}/run",
        "-m",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "error: sweep point #1 (communication.channel_usage=0 " in proc.stderr
    assert "config key 'communication.channel_usage' = 0 is invalid" in proc.stderr
    assert "ray" not in (proc.stdout + proc.stderr).lower().replace("array", "")
    assert not (tmp_path / "points").exists() and not (tmp_path / "run" / "0").exists()


@pytest.mark.slow
def test_the_command_line_sweep_is_one_simulation_and_resumes(tmp_path):
    args = [
        "users.count=2",
        "experiment.rounds=2",
        "communication.channel_usage=1,2",
        "experiment.progress=false",
        f"sweep_store={tmp_path}/points",
    ]
    first = _cli("ok", *args, f"hydra.sweep.dir={tmp_path}/run1", "-m", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "sweep: 2 points, 0 already finished" in first.stdout
    assert first.stderr.count("DEPRECATED FEATURE") == 1  # Flower's notice: once per simulation
    for job in ("0", "1"):
        assert (tmp_path / "run1" / job / "results.parquet").is_file()
    assert len(list((tmp_path / "points").iterdir())) == 2
    again = _cli("ok", *args, f"hydra.sweep.dir={tmp_path}/run2", "-m", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sweep: 2 points, 2 already finished" in again.stdout
    assert "DEPRECATED FEATURE" not in again.stderr  # no simulation at all
    a = pd.read_parquet(tmp_path / "run1" / "1" / "results.parquet")
    b = pd.read_parquet(tmp_path / "run2" / "1" / "results.parquet")
    pd.testing.assert_frame_equal(a, b)
