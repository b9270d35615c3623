"""Simulation on an existing Ray cluster: a head started here (`ray start --head` on
127.0.0.1, stopped by its PID) runs a small simulation given its address."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from common.run.settings import ConfigError


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:0", "127.0.0.1:70000", ":6379"])
def test_a_ray_address_that_is_not_host_and_port_is_refused(address):
    from conf import settings

    with pytest.raises(ConfigError, match=r"experiment.ray_address.*must be host:port"):
        settings(f"experiment.ray_address={address}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_simulation_attaches_to_an_existing_ray_cluster(cache_dir):
    from common.assets.source import AssetSource
    from common.run.driver import run_experiment
    from conf import settings
    from launch.environment import QUIET_ENV
    from launch.simulation import simulate

    port = _free_port()
    # a short folder: Ray's socket paths must stay under the system's 107-character limit
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, **QUIET_ENV}
    head = subprocess.Popen(
        [
            ray,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(temp.glob("session_*/logs/gcs_server.out")):
            assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.5)
        time.sleep(3.0)
        run = settings(
            "users.count=2",
            "experiment.rounds=3",
            "experiment.progress=false",
            f"cache_dir={cache_dir}",
            f"experiment.ray_address=127.0.0.1:{port}",
        )
        outcome = simulate(run)
        drivers = list(temp.glob("session_*/logs/python-core-driver-*"))
        workers = list(temp.glob("session_*/logs/python-core-worker-*"))
        assert drivers and workers  # the simulation's driver and actors ran on this cluster
        alone = run_experiment(AssetSource(run).problem(), run)
        np.testing.assert_array_equal(outcome.results.accuracy, alone.results.accuracy)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)
    time.sleep(2.0)
    with pytest.raises(ProcessLookupError):
        os.killpg(head.pid, 0)  # nothing of the cluster is left
