"""Experiment trackers (logger=mlflow|tensorboard|wandb): what a run logs, read back with
each library's own reader; sweeps under one parent; resumed runs continue their tracked
run; a tracker that fails warns once and costs no result; bad input is refused."""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clients.client_app import make_client_app
from common.run import trackers
from common.run.checkpoint import Checkpoint
from common.run.driver import run_experiment
from common.run.points import PointStore
from common.run.results import RunOutcome
from common.run.settings import ConfigError, refuse_unused
from common.run.trackers import (
    MAX_PARAM_LENGTH,
    check_tracker,
    close_sweep,
    final_metrics,
    flat_settings,
    name_runs,
    open_tracker,
    run_label,
    scrub,
)
from conf import settings
from server.sweep import WriteTo, run_point, run_points
from tests.synthetic import settings_for
from tests.test_apps import SOURCE, _client_grid
from tests.test_resume import Killed, _crashing_grid

pytestmark = pytest.mark.usefixtures("task_identity")  # Flower messages need a run identity


@pytest.fixture(autouse=True)
def _fresh_process_memory(monkeypatch):
    """Each test starts as a new process would: no tracking URI known to be unreachable."""
    monkeypatch.setattr(trackers, "_UNREACHABLE", set())


REPO = Path(__file__).resolve().parents[1]
ROUNDS = 4


def _mlflow(tmp_path: Path, **changes):
    """A run tracked in a fresh SQLite store under ``tmp_path``, and that store's client."""
    from mlflow import MlflowClient

    uri = changes.pop("logger.uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = settings_for(
        SOURCE.problem(),
        rounds=ROUNDS,
        channel_uses=2,
        seed=5,
        **{"logger.name": "mlflow", "logger.uri": uri, "logger.experiment": "tests"},
        **changes,
    )
    return run, MlflowClient(tracking_uri=uri)


def _runs(client, experiment: str = "tests"):
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_an_mlflow_run_has_its_settings_a_metric_per_round_its_results_and_tables(tmp_path):
    run, client = _mlflow(tmp_path, **{"logger.run_name": "one run"})
    run_point(_client_grid(make_client_app(None, SOURCE)), run, WriteTo(tmp_path / "out"), SOURCE)
    outcome = RunOutcome.load(tmp_path / "out")
    [tracked] = _runs(client)
    assert tracked.info.run_name == "one run" and tracked.info.status == "FINISHED"
    params = tracked.data.params
    assert params["strategy.name"] == "federated" and params["seed"] == "5"
    assert params["communication.channel_usage"] == "2"  # the config key, not the field name
    assert params["logger.name"] == "mlflow"
    run_id = tracked.info.run_id
    objective = client.get_metric_history(run_id, "objective")
    assert [m.step for m in objective] == list(range(1, ROUNDS + 1))  # one row per round
    assert [m.value for m in objective] == pytest.approx(outcome.history.objective.tolist())
    bytes_up = [m.value for m in client.get_metric_history(run_id, "bytes_up")]
    assert bytes_up[:ROUNDS] == pytest.approx(outcome.history.bytes_up.tolist())
    metrics = tracked.data.metrics
    assert metrics["accuracy"] == pytest.approx(outcome.results.accuracy.mean())
    for user, accuracy in zip(outcome.results.user, outcome.results.accuracy, strict=True):
        assert metrics[f"user_{user}/accuracy"] == pytest.approx(accuracy)
    assert metrics["users_evaluated"] == len(outcome.results) == 3
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert artifacts == {
        "results.parquet",
        "results.csv",
        "history.csv",
        "failures.csv",
        "precoders.npz",
        "settings.json",
    }
    local = Path(client.download_artifacts(run_id, "history.csv", str(tmp_path)))
    assert local.read_text() == (tmp_path / "out" / "history.csv").read_text()


def test_a_killed_run_resumed_continues_its_tracked_run(tmp_path):
    run, client = _mlflow(tmp_path)
    folder = tmp_path / "killed"
    with pytest.raises(Killed):
        run_point(_crashing_grid(make_client_app(None, SOURCE), 3), run, WriteTo(folder), SOURCE)
    [killed] = _runs(client)
    assert killed.info.status == "KILLED"
    assert Checkpoint.read(folder).tracker == f"mlflow:{killed.info.run_id}"
    grid = _client_grid(make_client_app(None, SOURCE))
    run_point(grid, run.replace(resume=True), WriteTo(folder), SOURCE)
    [resumed] = _runs(client)  # the same tracked run, not a second one
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "objective")]
    assert steps == list(range(1, ROUNDS + 1))  # rounds 1-2 before the kill, 3-4 after


def test_sweep_points_are_children_of_one_parent_named_by_their_overrides(tmp_path):
    base, client = _mlflow(tmp_path)
    points = [
        ([f"seed={seed}", "logger=mlflow"], base.replace(seed=seed, rounds=2)) for seed in (1, 2, 3)
    ]
    store = PointStore(tmp_path / "points")
    named, parent = name_runs(points, "sweep: seed=1,2,3", sweep=[s for _, s in points])
    assert parent is not None
    run_points(_client_grid(make_client_app(None, SOURCE)), named, store, SOURCE, in_flight=3)
    close_sweep(named[0], parent, failed=False)
    runs = {r.info.run_name: r for r in _runs(client)}
    assert set(runs) == {"sweep: seed=1,2,3", "seed=1", "seed=2", "seed=3"}
    assert runs["sweep: seed=1,2,3"].info.status == "FINISHED"
    for seed in (1, 2, 3):
        child = runs[f"seed={seed}"]
        assert child.data.tags["mlflow.parentRunId"] == parent
        assert child.data.params["seed"] == str(seed)
        results = RunOutcome.load(store.path(named[seed - 1])).results
        assert child.data.metrics["accuracy"] == pytest.approx(results.accuracy.mean())
    # the same sweep started again goes on under the same parent
    again, reopened = name_runs(points, "sweep: seed=1,2,3", sweep=[s for _, s in points])
    assert reopened == parent
    assert len(_runs(client)) == 4


def test_tensorboard_event_files_hold_every_round_and_the_results(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    problem = SOURCE.problem()
    run = settings_for(problem, rounds=ROUNDS, channel_uses=2, **{"logger.name": "tensorboard"})
    outcome = run_experiment(problem, run, folder=tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    objective = events.Scalars("history/objective")
    assert [e.step for e in objective] == list(range(1, ROUNDS + 1))
    assert [e.value for e in objective] == pytest.approx(outcome.history.objective, rel=1e-6)
    [accuracy] = events.Scalars("results/accuracy")
    assert accuracy.step == ROUNDS
    assert accuracy.value == pytest.approx(outcome.results.accuracy.mean(), rel=1e-6)
    assert "settings/text_summary" in events.Tags()["tensors"]  # the settings table (add_text)


def test_a_sweeps_tensorboard_files_outlive_its_points_journals(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base = settings_for(
        SOURCE.problem(), rounds=2, channel_uses=2, **{"logger.name": "tensorboard"}
    )
    points = [base.replace(seed=seed) for seed in (1, 2)]
    store = PointStore(tmp_path / "points")
    run_points(_client_grid(make_client_app(None, SOURCE)), points, store, SOURCE, in_flight=2)
    for point in points:
        assert store.finished(point)
        events = EventAccumulator(str(store.outputs(point) / "tensorboard"))
        events.Reload()
        assert [e.step for e in events.Scalars("history/power")] == [1, 2]
    assert not (tmp_path / "points" / ".journal").exists()  # the journals went, the events stay


def test_wandb_offline_writes_its_run_folder_under_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):  # nothing in ~
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    problem = SOURCE.problem()
    run = settings_for(problem, rounds=2, channel_uses=2, **{"logger.name": "wandb"})
    from common.run.session import Session

    opened = []
    track = Session.track
    monkeypatch.setattr(Session, "track", lambda s, f: opened.append(track(s, f)) or opened[-1])
    run_experiment(problem, run, folder=tmp_path)
    [tracker] = opened
    assert tracker.active and tracker.ref.startswith("wandb:")
    run_id = tracker.ref.partition(":")[2]
    [folder] = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    assert (folder / f"run-{run_id}.wandb").stat().st_size > 0


def test_an_unreachable_tracker_warns_once_and_the_tables_are_written(tmp_path, caplog):
    # nothing listens; MLflow's own error quotes the URI, password included
    run, _ = _mlflow(tmp_path, **{"logger.uri": "http://ann:s3cret@127.0.0.1:9"})
    with caplog.at_level(logging.DEBUG):
        run_point(
            _client_grid(make_client_app(None, SOURCE)), run, WriteTo(tmp_path / "out"), SOURCE
        )
    warned = [r.getMessage() for r in caplog.records if r.name == "common.run.trackers"]
    assert len(warned) == 1
    assert "logger=mlflow: could not open the run at http://ann:***@127.0.0.1:9" in warned[0]
    assert "127.0.0.1" in warned[0].split("(", 1)[1]  # the library's cause is kept...
    assert not [r for r in caplog.records if "s3cret" in r.getMessage()]  # ...masked
    assert not [r for r in caplog.records if r.name.startswith("urllib3") and r.levelno >= 30]
    assert len(RunOutcome.load(tmp_path / "out").results) == 3


def test_an_unreachable_store_warns_once_for_a_whole_sweep(tmp_path, caplog):
    base, _ = _mlflow(tmp_path, **{"logger.uri": "http://127.0.0.1:9"})
    points = [base.replace(seed=seed, rounds=2) for seed in (1, 2, 3)]
    store = PointStore(tmp_path / "points")
    with caplog.at_level(logging.WARNING):
        named, parent = name_runs([([f"seed={p.seed}"], p) for p in points], "sweep", sweep=points)
        run_points(_client_grid(make_client_app(None, SOURCE)), named, store, SOURCE, in_flight=3)
    assert parent is None
    warned = [r.getMessage() for r in caplog.records if r.name == "common.run.trackers"]
    assert len(warned) == 1 and "sweep's parent run" in warned[0]
    assert all(store.finished(point) for point in points)


def test_a_resumed_run_whose_tracked_run_is_gone_starts_a_new_one(tmp_path):
    run, client = _mlflow(tmp_path)
    tracker = open_tracker(run, tmp_path, resumed="mlflow:0123456789abcdef", completed=2)
    assert tracker.active and tracker.ref.startswith("mlflow:")
    assert tracker.ref != "mlflow:0123456789abcdef"
    [created] = _runs(client)
    assert created.info.run_id == tracker.ref.partition(":")[2]


def test_final_byte_counts_are_the_users_traffic_summed(tmp_path):
    problem = SOURCE.problem()
    outcome = run_experiment(problem, settings_for(problem, rounds=2, channel_uses=2))
    final = final_metrics(outcome)
    assert final["total_bytes_down"] == outcome.results.bytes_down.sum() > 0
    assert final["total_bytes_up"] == outcome.results.bytes_up.sum() > 0
    assert "bytes_up" not in final  # the per-round series keeps its own name


def test_a_password_in_the_tracking_uri_is_masked_in_what_is_logged():
    run = settings("logger=mlflow", "logger.uri=https://ann:s3cret@mlflow.example.org:8443")
    assert flat_settings(run)["logger.uri"] == "https://ann:***@mlflow.example.org:8443"
    assert settings("logger=mlflow", "logger.uri=databricks").logger.uri == "databricks"
    said = "HTTPConnectionPool: url http://ann:p@ss:w0rd@h:1/api and file:///x, https://bob@h"
    assert (
        scrub(said) == "HTTPConnectionPool: url http://ann:***@h:1/api and file:///x, https://bob@h"
    )


def test_a_tracker_failing_mid_run_stops_being_called_and_the_run_goes_on(tmp_path, caplog):
    run, client = _mlflow(tmp_path)
    from mlflow import MlflowClient

    calls = []

    def full(self, *args, **kwargs):
        calls.append(args)
        raise OSError(28, "No space left on device")

    original = MlflowClient.log_batch
    MlflowClient.log_batch = lambda self, run_id, metrics=(), params=(), **kw: (
        full(self) if metrics else original(self, run_id, metrics=metrics, params=params, **kw)
    )
    try:
        with caplog.at_level(logging.WARNING):
            outcome = run_experiment(SOURCE.problem(), run)
    finally:
        MlflowClient.log_batch = original
    warned = [r.getMessage() for r in caplog.records if r.name == "common.run.trackers"]
    assert len(warned) == 1 and "could not log round 1" in warned[0]
    assert "No space left on device" in warned[0]
    assert len(calls) == 1  # not called again after the failure
    assert len(outcome.history) == ROUNDS and len(outcome.results) == 3


def test_bad_logger_settings_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"'logger.name' = 'neptune' .*none, mlflow"):
        settings("logger.name=neptune")
    with pytest.raises(ConfigError, match=r"'logger.uri' = 'ftp://host/x' .*sqlite, postgresql"):
        settings("logger=mlflow", "logger.uri=ftp://host/x")
    with pytest.raises(ConfigError, match=r"'logger.mode' = 'sometimes'"):
        settings("logger=wandb", "logger.mode=sometimes")
    with pytest.raises(
        ConfigError, match=r"'logger.uri' .*no effect with logger.name='none'.*logger=mlflow"
    ):
        refuse_unused([(["logger.uri"], settings("logger.uri=sqlite:///x.db"))])
    relative = settings("logger=mlflow", "logger.uri=sqlite:///runs/m.db").logger.uri
    assert relative == f"sqlite:///{os.path.abspath('runs/m.db')}"  # the AP may run elsewhere


def test_a_tracker_whose_library_is_missing_is_refused_with_the_install_command(monkeypatch):
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find(name, *a)
    )
    with pytest.raises(ConfigError, match=r"'logger.name' = 'wandb' needs the wandb package.*pip"):
        check_tracker(settings("logger=wandb"))
    check_tracker(settings("logger=mlflow"))  # installed: nothing to say


def test_parameters_are_dotted_config_keys_and_long_values_are_cut():
    flat = flat_settings(settings("users.count=2000", "users.assignment=random"))
    assert flat["users.count"] == "null"  # resolved into users.models, one model per user
    assert flat["experiment.rounds"] == "30" and flat["experiment.progress"] == "true"
    assert len(flat["users.models"]) == MAX_PARAM_LENGTH and flat["users.models"].endswith("…")


def test_a_run_is_named_by_the_overrides_that_change_its_numbers():
    assert run_label(["seed=3", "logger=mlflow", "logger.uri=x", "sweep_store=/tmp/s"]) == "seed=3"
    assert run_label(["strategy=top_k", "experiment.progress=false", "hydra.run.dir=o"]) == (
        "strategy=top_k"
    )
    assert run_label([]) == "default"


@pytest.mark.slow
def test_a_cli_sweep_is_one_parent_with_three_children_and_a_restart_logs_only_new_points(
    tmp_path,
):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        sys.executable,
        str(REPO / "run_simulation.py"),
        "logger=mlflow",
        f"logger.uri={uri}",
        "experiment.rounds=2",
        "experiment.progress=false",
        "seed=1,2,3",
        f"sweep_store={tmp_path / 'points'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "-m",
    ]
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr"), "FLWR_TELEMETRY_ENABLED": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    runs = {r.info.run_name: r for r in _runs(client, "fedalign")}
    parent = runs.pop("sweep: experiment.rounds=2 seed=1,2,3")
    assert set(runs) == {f"experiment.rounds=2 seed={seed}" for seed in (1, 2, 3)}
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == {parent.info.run_id}
    assert all(math.isfinite(r.data.metrics["accuracy"]) for r in runs.values())
    # one point lost: the sweep started again computes and logs it alone, under the parent
    lost = next((tmp_path / "points").glob("*/results.parquet")).parent
    shutil.rmtree(lost)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _runs(client, "fedalign")
    assert len(after) == 5
    new = [r for r in after if r.info.run_id not in {x.info.run_id for x in runs.values()}]
    new = [r for r in new if r.info.run_id != parent.info.run_id]
    assert len(new) == 1 and new[0].data.tags["mlflow.parentRunId"] == parent.info.run_id
