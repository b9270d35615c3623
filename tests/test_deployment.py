"""A real deployment on loopback: one SuperLink and one SuperNode per user device as separate
OS processes (Flower's deployment runtime), TLS and SuperNode authentication on, each device
with its own prepared assets. Every process is stopped by its PID when the module ends,
also when a test fails."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.run.results import RunOutcome
from conf import split_overrides
from launch.federation import Federation, make_node_key

pytestmark = pytest.mark.slow

# a quoted label with a space and a comma: one value through flwr run's run config, not a
# sweep (Flower's inline syntax emptied it; a plain split made it two points)
OVERRIDES = "users.count=2 experiment.rounds=3 experiment.progress=false simulation='r 1,a'"


def _free_port() -> int:
    """A port for the SuperLink with the SuperNodes' ports (+100, +101, ...) free too."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 65000 and all(_free(port + 100 + k) for k in range(8)):
            return port
    raise RuntimeError("no free port")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def federation(tmp_path_factory, cache_dir):
    from conf import settings

    fed = Federation(tmp_path_factory.mktemp("federation"), _free_port())
    try:
        fed.up(settings(*split_overrides(OVERRIDES)).users.models, ap_cache=str(cache_dir))
        yield fed
    finally:
        fed.down()
        assert fed.running() == {}


@pytest.fixture(scope="module")
def first_run(federation, tmp_path_factory):
    """The reference deployed run (its folder), shared by the tests that compare with it."""
    out = tmp_path_factory.mktemp("deployed")
    run_id = federation.submit(OVERRIDES, out)
    assert federation.wait(run_id, timeout=900) == "finished:completed"
    assert not (out / "points.csv").exists()  # one point
    return out


def test_a_secure_deployment_equals_the_simulation(first_run, cache_dir):
    """The same config and seed in process (equal to the simulation, tested elsewhere) gives
    the deployed run's precoders and accuracies."""
    from common.assets.source import AssetSource
    from common.run.driver import run_experiment
    from conf import settings

    deployed = RunOutcome.load(first_run)
    run = settings(*split_overrides(OVERRIDES), f"cache_dir={cache_dir}")
    alone = run_experiment(AssetSource(run).problem(), run)
    for name, value in alone.precoders.items():
        np.testing.assert_allclose(
            deployed.precoders[name], value, rtol=1e-9, atol=1e-10 * np.abs(value).max()
        )
    np.testing.assert_array_equal(deployed.results.accuracy, alone.results.accuracy)
    assert deployed.failures.empty and len(deployed.history) == 3


def test_an_unregistered_key_or_a_node_without_the_ca_is_refused(federation):
    stranger, _ = make_node_key(federation.folder / "keys", "stranger")
    unregistered = federation.start_supernode(7, "resnet10t", key=stranger)
    make_node_key(federation.folder / "keys", "user6")
    federation.register(6)
    no_ca = federation.start_supernode(6, "resnet10t", root_certificates=None)
    try:
        deadline = time.monotonic() + 60
        while (unregistered.poll() is None or no_ca.poll() is None) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        assert unregistered.returncode not in (None, 0)
        assert no_ca.returncode not in (None, 0)
        assert "Failed to activate SuperNode" in federation.log("supernode-7").read_text()
        assert "CERTIFICATE_VERIFY_FAILED" in federation.log("supernode-6").read_text()
    finally:
        federation.stop("supernode-7")
        federation.stop("supernode-6")


def test_a_killed_supernode_costs_its_user_one_round_and_rejoins(federation, tmp_path):
    """User 1's SuperNode is killed during round 3 and started again: the round waits at
    most the round timeout, the run goes on with user 0, and user 1 is back from round 4
    (rebuilt from nothing) and evaluated."""
    out = tmp_path / "run"
    overrides = "users.count=2 experiment.rounds=6 experiment.round_timeout=30"
    run_id = federation.submit(overrides + " experiment.progress=false", out)
    deadline = time.monotonic() + 600
    while not (out / "history.csv").exists() or len(pd.read_csv(out / "history.csv")) < 2:
        assert time.monotonic() < deadline, "round 2 never ended"
        time.sleep(0.3)
    time.sleep(1.0)  # round 3 is under way
    federation.stop("supernode-1")
    time.sleep(3.0)
    federation.start_supernode(1, "resnet10t")
    assert federation.wait(run_id, timeout=900) == "finished:completed"

    outcome = RunOutcome.load(out)
    failed = outcome.failures[["round", "stage", "user"]].to_dict("records")
    assert failed and all(f["user"] == 1 and f["stage"] == "train" for f in failed)
    assert {f["round"] for f in failed} <= {3, 4}
    assert outcome.history.seconds.max() < 30 + 20  # the timeout bounds the lost round
    assert outcome.history.responded.tolist()[-1] == 2  # back before the last round
    assert outcome.results.user.tolist() == [0, 1]


def test_a_supernode_killed_with_sigkill_comes_back_through_a_restart_loop(federation, tmp_path):
    """A crash (SIGKILL: no goodbye reaches the SuperLink): started again at once, the
    device is refused while its old node counts as online; a restart loop gets it in
    after about 40 s (the SuperLink's heartbeat timeout), and the user is back for the
    rest of the run. Measured (benchmarks/bench_deployment.py --kill-after 3): only the
    round in flight is lost; the race with the next round's start may cost one more, and
    a message the dead node had not fetched yet waits for the restarted node (it comes
    back under the same node id: its key names it) and nothing is lost."""
    out = tmp_path / "run"
    run_id = federation.submit("users.count=2 experiment.rounds=8 experiment.progress=false", out)
    deadline = time.monotonic() + 600
    while not (out / "history.csv").exists() or len(pd.read_csv(out / "history.csv")) < 2:
        assert time.monotonic() < deadline, "round 2 never ended"
        time.sleep(0.3)
    time.sleep(1.0)  # round 3 is under way
    federation.kill_supernode(1)
    started = time.monotonic()
    starts = federation.restart_supernode(1, "resnet10t")
    assert starts > 1  # the first start after the crash is refused (its old node is online)
    assert time.monotonic() - started < 120
    assert federation.wait(run_id, timeout=900) == "finished:completed"

    outcome = RunOutcome.load(out)
    lost = sorted(set(outcome.failures[outcome.failures.user == 1]["round"]))
    assert len(lost) <= 2 and all(r >= 3 for r in lost) and set(outcome.failures.user) <= {1}
    assert outcome.history.responded.tolist()[-1] == 2  # back before the last round
    assert outcome.results.user.tolist() == [0, 1]


def test_an_ap_whose_superlink_crashed_resumes_and_ends_like_the_uninterrupted_run(
    federation, first_run, tmp_path, cache_dir
):
    """The SuperLink and everything below it (SuperExec, the ServerApp) are killed after a
    checkpoint, as a crash of the AP's machine would; the SuperLink started again (same
    database: the devices' keys are still registered) resumes the run in the same folder,
    and it ends with the uninterrupted run's precoders and accuracies, bit for bit."""
    import os
    import signal

    from launch.environment import descendants

    out = tmp_path / "run"
    federation.submit(OVERRIDES, out)
    deadline = time.monotonic() + 600
    while not (out / "checkpoint.npz").exists():
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    superlink = federation.running()["superlink"]
    crashed = [superlink] + [pid for pid, _ in descendants(superlink)]
    assert federation.serverapp_pids()
    for pid in crashed:
        os.kill(pid, signal.SIGKILL)
    federation.stop("superlink")  # forget it (nothing is left to stop)
    assert not (out / "results.parquet").exists()

    federation.start_superlink(ap_cache=str(cache_dir))
    resumed = federation.submit(OVERRIDES + " experiment.resume=true", out)
    assert federation.wait(resumed, timeout=900) == "finished:completed"
    outcome, reference = RunOutcome.load(out), RunOutcome.load(first_run)
    for name, value in reference.precoders.items():
        np.testing.assert_array_equal(outcome.precoders[name], value)
    np.testing.assert_array_equal(outcome.results.accuracy, reference.results.accuracy)
    assert outcome.history["round"].tolist() == [1, 2, 3]
    assert not Path(out / "checkpoint.npz").exists()
