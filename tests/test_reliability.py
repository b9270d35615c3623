"""Edge cases a hostile or unlucky user meets: degenerate pilots, bad values, partial runs."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from common.maths.whitening import fit_whitening
from common.run.driver import run_experiment
from common.run.sources import AlignmentProblem
from tests.synthetic import make_problem, settings_for

PROBLEM = make_problem(n=400, n_test=100, ap_dim=16, user_dims=(12, 10), seed=1)
BASE = settings_for(PROBLEM, rounds=3, channel_uses=2, seed=2)


def test_duplicated_pilots_are_warned_about_and_recorded(caplog):
    """3 distinct pilots of 400 for a 6-dimensional whitened latent: the run goes on, says
    why alignment will be poor, and the history keeps the count."""
    user = PROBLEM.users[0]
    repeated = user.pilots[np.arange(400) % 3]
    problem = AlignmentProblem(
        PROBLEM.ap, (dataclasses.replace(user, pilots=repeated), PROBLEM.users[1])
    )
    with caplog.at_level(logging.WARNING, logger="common.run.session"):
        outcome = run_experiment(problem, BASE)
    assert "user 0 has only 3 distinct pilots for a 6-dimensional whitened latent" in caplog.text
    assert outcome.history.min_distinct_pilots.tolist() == [3.0] * BASE.experiment.rounds
    clean = run_experiment(PROBLEM, BASE)
    assert clean.history.min_distinct_pilots.tolist() == [400.0] * BASE.experiment.rounds


@pytest.mark.parametrize("scale, kind", [(1e200, r"1.87e\+200"), (1e-200, "1.87e-200")])
def test_huge_or_tiny_latents_are_named_by_their_scale_not_called_zero(scale, kind):
    v = scale * np.random.default_rng(0).standard_normal((3, 10))
    with pytest.raises(ValueError, match=f"vary by up to {kind}.*rescale the latents"):
        fit_whitening(v)
    with pytest.raises(ValueError, match="all 10 pilots are identical"):
        fit_whitening(np.ones((3, 10)))


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_latents_beyond_float32_are_named_by_their_scale_before_the_cast(scale):
    """Latents x 1e200 used to report "vary by up to nan", x 1e-200 "all 400 pilots are
    identical": the float32 cast had made them inf or 0 before the scale check."""
    from common.maths.conventions import CORRECTED
    from common.maths.validation import InvalidValue
    from common.parties.consensus import AdmmUser

    user = PROBLEM.users[0]
    peak = float(np.max(np.abs(user.pilots))) * scale
    scaled = dataclasses.replace(user, pilots=user.pilots * scale, test=user.test * scale)
    with pytest.raises(InvalidValue, match=re.escape(f"pilot latents reach {peak:.3g} in")) as info:
        AdmmUser.prepare(0, scaled, CORRECTED)
    assert "rescale the latents" in str(info.value)
    AdmmUser.prepare(0, dataclasses.replace(user, pilots=user.pilots * 1e30), CORRECTED)


def test_users_that_failed_permanently_are_accounted_for():
    import pandas as pd

    from common.run.reporting import failed_users

    results = pd.DataFrame({"user": [0, 2]})
    failures = pd.DataFrame(
        [{"round": r, "stage": "train", "user": 2, "reason": "radio off"} for r in (1, 2, 3)]
        + [{"round": 4, "stage": "evaluate", "user": 1, "reason": "no reply"}]
    )
    account = failed_users(results, failures, users=3, rounds=4, max_fraction=0.5)
    assert account == {
        1: "never evaluated (last: no reply)",
        2: "failed 3 of 4 training rounds (last: radio off)",
    }
    assert failed_users(results, failures, users=3, rounds=4, max_fraction=0.75) == {
        1: "never evaluated (last: no reply)"
    }


def test_a_run_where_every_user_failed_writes_nothing(tmp_path):
    from common.run.results import NoResults

    run = run_experiment(PROBLEM, BASE.replace(**{"faults.users": 2}, **{"faults.kind": "nan"}))
    outcome = dataclasses.replace(run, results=run.results.iloc[0:0])  # nobody evaluated
    with pytest.raises(NoResults, match="every user failed.*user 0 .*uplink rejected"):
        outcome.save(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _cli(tmp_path, *overrides: str):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [
            sys.executable,
            str(root / "run_simulation.py"),
            "users.count=2",
            "experiment.rounds=2",
            "experiment.progress=false",
            f"hydra.run.dir={tmp_path}/run",
            *overrides,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_a_run_with_a_permanently_failed_user_exits_non_zero_unless_allowed(tmp_path):
    """User 0's uplinks are NaN: the AP rejects them every round. The run finishes, writes
    its tables, and says so with a non-zero exit; allow_partial accepts it."""
    proc = _cli(tmp_path, "faults.users=1", "faults.kind=nan")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "1 of 2 users failed permanently" in proc.stderr
    assert (
        "user 0 (vit_small_p16): failed 2 of 2 training rounds (last: uplink rejected: "
        "align_uplink.a_gram has 256 non-finite value(s))"
    ) in proc.stderr
    assert (tmp_path / "run" / "results.parquet").exists()
    allowed = _cli(tmp_path, "faults.users=1", "faults.kind=nan", "experiment.allow_partial=true")
    assert allowed.returncode == 0, allowed.stderr[-2000:]


def test_yamls_bare_nan_is_the_nan_fault_kind_not_a_float():
    """``faults.kind=nan`` reaches the settings as the float NaN (YAML and Hydra read a bare
    ``nan`` so); it is the fault kind ``"nan"``, and a user then sends NaN uplinks."""
    from conf import settings

    assert settings("faults.kind=nan", "faults.users=1").faults.kind == "nan"
    assert settings("faults.kind='nan'", "faults.users=1").faults.kind == "nan"


@pytest.mark.parametrize(
    "override, message",
    [
        ("+foo=1", "config key(s) 'foo' are not read by any part of the program"),
        ("communication.snr=1e308", "must be in [-50, 100] dB (or inf for no noise), got 1e+308"),
        ("seed=18446744073709551616", "seed must be a whole number in 0..9223372036854775807"),
        ("experiment.cpus_per_user=100", "this machine has"),
        ("experiment.cpus_per_user=1e-9", "could not schedule the users (allowed: 0.1.."),
        ("experiment.rounds=100000000", "rounds must be at most 100,000"),
        ("communication.antennas_transmitter=10000", "GiB are available: reduce"),
        ("communication.channel_usage=1000000", "GiB are available: reduce"),
    ],
)
def test_refused_runs_fail_before_ray_and_leave_no_output_folder(
    tmp_path, cache_dir, override, message
):
    proc = _cli(tmp_path, override, "hydra.run.dir=outputs/run", f"cache_dir={cache_dir}")
    assert proc.returncode == 1
    assert message in proc.stderr, proc.stderr[-1000:]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "run").exists()


def test_the_memory_estimate_follows_the_sizes_and_names_the_numbers():
    from common.run import budget

    small = budget.estimate(BASE, 3500, 1500, 192, [384, 512])
    big = budget.estimate(BASE.replace(antennas_tx=1024), 3500, 1500, 192, [384, 512])
    assert 0 < small.total < 1024**3 and big.ap > 50 * small.ap
    assert budget.estimate(BASE, 3500, 1500, 192, [384], user_copies=3).total == (
        small.ap
        - 16 * BASE.link.tx_dim * (3500 + BASE.link.tx_dim)  # one user's uplink less
        + 3 * budget.estimate(BASE, 3500, 1500, 192, [384]).users
    )
    budget.check_fits(small, 8 * 1024**3, "a run")
    with pytest.raises(MemoryError, match=r"a run needs about .* GiB .* but 0.0 GiB are available"):
        budget.check_fits(big, 1024, "a run")


def test_a_killed_driver_leaves_no_worker_computing(tmp_path):
    """The processes that host simulations and in-process studies die with their parent."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    from launch.environment import is_alive

    driver = (
        "import multiprocessing, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from launch.environment import single_threaded\n"
        "def work(path):\n"
        "    import os, time\n"
        "    open(path, 'w').write(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    context = multiprocessing.get_context('spawn')\n"
        "    pool = ProcessPoolExecutor(1, mp_context=context, initializer=single_threaded)\n"
        "    pool.submit(work, sys.argv[1])\n"
        "    time.sleep(120)\n"
    )
    pid_file, script = tmp_path / "worker.pid", tmp_path / "driver.py"
    script.write_text(driver)  # spawned workers import the driver's functions from a file
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, str(script), str(pid_file)], cwd=root, env=env)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.2)
        worker = int(pid_file.read_text())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        # gone, or a zombie (computes nothing; its reaper was the dead driver)
        while is_alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not is_alive(worker)
    finally:
        proc.kill()
        if pid_file.exists() and pid_file.read_text():  # never leave the test's own orphan
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.slow
def test_a_sweep_with_one_point_too_big_is_refused_before_ray(tmp_path, cache_dir):
    """Every point is checked, not one per user set: 4 antennas fit, 10,000 do not."""
    proc = _cli(
        tmp_path,
        "communication.antennas_transmitter=4,10000",
        f"cache_dir={cache_dir}",
        f"sweep_store={tmp_path}/points",
        "-m",
    )
    assert proc.returncode != 0
    assert "sweep point" in proc.stderr and "10000x4, u=4) (through Flower) needs about" in (
        proc.stderr
    )
    assert not (tmp_path / "points").exists() or not any((tmp_path / "points").iterdir())


def _interrupt_when(command: list[str], cwd, ready, timeout: float = 300.0):
    """Start ``command`` in a session of its own, send its process group SIGINT (a terminal's
    Ctrl-C) once ``ready()`` holds; (exit status, seconds to exit, stderr, processes that it
    had started and that are still alive)."""
    import os
    import signal
    import subprocess
    import time

    from launch.environment import descendants, is_alive

    # a program started from a terminal has Ctrl-C's default action; tests run as a shell's
    # background job (`make test &`) inherit SIGINT ignored, and so would the command
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            start_new_session=True,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, "never got ready"
            time.sleep(0.2)
        started = [pid for pid, _ in descendants(proc.pid)]
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        seconds = time.monotonic() - sent
        time.sleep(1.0)
        return proc.returncode, seconds, err, [pid for pid in started if is_alive(pid)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_ctrl_c_stops_a_run_within_10_s_and_says_how_to_resume(tmp_path, cache_dir):
    import sys

    folder = tmp_path / "run"
    root = Path(__file__).resolve().parents[1]
    status, seconds, err, alive = _interrupt_when(
        [
            sys.executable,
            str(root / "run_simulation.py"),
            "users.count=2",
            "experiment.rounds=60",
            "experiment.progress=false",
            f"cache_dir={cache_dir}",
            f"hydra.run.dir={folder}",
        ],
        tmp_path,
        lambda: (folder / "checkpoint.npz").exists(),
    )
    assert status == 130 and seconds < 10, (status, seconds, err[-1500:])
    assert alive == []  # no simulation process, no Ray process left
    assert f"interrupted: {folder} keeps the history and AP checkpoint of rounds 1-" in err
    assert f"experiment.resume=true hydra.run.dir={folder}" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_stops_an_in_process_study_and_keeps_its_finished_points(tmp_path, cache_dir):
    import sys

    store = tmp_path / "points"
    status, seconds, err, alive = _interrupt_when(
        [
            sys.executable,
            "-m",
            "launch.figures",
            "--quick",
            "--only",
            "snr",
            "--in-process",
            "--jobs",
            "2",
            "--store",
            str(store),
            "--out",
            str(tmp_path / "figures"),
            f"cache_dir={cache_dir}",
        ],
        Path(__file__).resolve().parents[1],
        lambda: store.is_dir() and any(not p.name.startswith(".") for p in store.iterdir()),
    )
    assert status == 130 and seconds < 10, (status, seconds, err[-1500:])
    assert alive == []
    assert "points are finished and kept in" in err and "redoes only the others" in err


@pytest.mark.slow
def test_a_killed_ray_actor_is_re_created_and_its_user_rejoins(tmp_path, cache_dir):
    """The process of one user's actor is killed after round 2: Ray re-creates it, the user
    it was serving fails that round only, and the run ends with every user evaluated."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import pandas as pd

    from common.run.results import RunOutcome
    from launch.environment import descendants

    folder = tmp_path / "run"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            str(root / "run_simulation.py"),
            "users.count=2",
            "experiment.rounds=8",
            "experiment.progress=false",
            f"cache_dir={cache_dir}",
            f"hydra.run.dir={folder}",
        ],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (folder / "history.csv").exists() or len(pd.read_csv(folder / "history.csv")) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "round 2 never ended"
            time.sleep(0.1)
        actors = [pid for pid, command in descendants(proc.pid) if "ClientAppActor" in command]
        assert actors
        os.kill(actors[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    outcome = RunOutcome.load(folder)
    assert len(outcome.failures) <= 2  # the message(s) the dead actor held
    assert outcome.history.responded.tolist()[-3:] == [2, 2, 2]
    assert outcome.results.user.tolist() == [0, 1]
