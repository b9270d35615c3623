"""Refusals from the command line: one ``error:`` line before any work, naming the key, the
value and what to do; nothing that existed before is changed; no wait without an end."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.files import check_writable
from common.run.settings import ConfigError
from conf import settings, settings_from_overrides
from launch.errors import Refused, Untouched, one_line, reported

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = "/proc/fedalign-forbidden"  # a folder no process can create, root included


def _cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    """``run_simulation.py`` on the smallest run; any Ray start would fail loudly."""
    return subprocess.run(
        [sys.executable, str(ROOT / "run_simulation.py"), "experiment=quick", "users.count=2"]
        + list(args),
        cwd=cwd or ROOT,
        env={**os.environ, "RAY_ADDRESS": "ray://127.0.0.1:1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_error_line(proc) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("strategy.name=os:system", "is not a subclass of common.parties.access_point"),
        ("strategy.name=collections:OrderedDict", "is not a subclass of common.parties"),
        ("consensus.aggregator=os:system", "is not a subclass of common.maths.aggregation"),
        ("strategy.name=no_such_package:Thing", "could not be imported"),
    ],
)
def test_a_plugin_path_is_imported_and_its_class_checked_when_the_settings_are_made(
    override, message
):
    """They used to pass validation, start Ray, then fail with a traceback."""
    with pytest.raises(ConfigError, match=message) as info:
        settings(override)
    assert f"config key '{override.split('=')[0]}'" in str(info.value)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["cache_dir=/proc/x"], "error: cache folder /proc/x cannot be created"),
        (["cache_dir={file}"], "cannot be created ([Errno 17] File exists"),
        ([f"hydra.run.dir={FORBIDDEN}"], "error: config key 'hydra.run.dir' = '/proc/fedalign"),
        (
            ["data=cifar10", "data.download=false", "cache_dir={tmp}/cache"],
            "error: CIFAR-10 not available",
        ),
        (
            ["experiment.ray_address=256.0.0.1:1"],
            "error: config key 'experiment.ray_address' = '256.0.0.1:1': no Ray cluster",
        ),
        (
            [f"sweep_store={FORBIDDEN}", "seed=1,2", "hydra.sweep.dir={tmp}/sweep", "-m"],
            "error: config key 'sweep_store' = '/proc/fedalign-forbidden' cannot be written",
        ),
        (
            ["sweep_in_flight=0", "seed=1,2", "hydra.sweep.dir={tmp}/sweep", "-m"],
            "'sweep_in_flight' = 0",
        ),
    ],
)
def test_what_the_user_must_fix_is_one_error_line_not_a_traceback(tmp_path, args, expected):
    afile = tmp_path / "a-file"
    afile.write_text("")
    args = [a.format(file=afile, tmp=tmp_path) for a in args]
    if not any(a.startswith("hydra.") for a in args):
        args.append(f"hydra.run.dir={tmp_path}/run")
    started = time.monotonic()
    line = _one_error_line(_cli(*args))
    assert line.startswith(expected) or expected in line, line
    assert time.monotonic() - started < 60  # refused at once, no wait on a cluster
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_auto_without_a_cluster_is_one_line_naming_the_key(tmp_path):
    if Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a Ray cluster runs on this machine")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "run_simulation.py", "experiment=quick", "users.count=2"]
        + ["experiment.ray_address=auto", f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = _one_error_line(proc)
    assert "'experiment.ray_address' = 'auto' names no Ray cluster" in line
    assert "ray start --head" in line


def test_the_traceback_is_there_when_asked_for(tmp_path):
    proc = _cli("cache_dir=/proc/x", f"hydra.run.dir={tmp_path}/run", env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "CacheError" in proc.stderr


def test_a_refused_resume_leaves_the_folders_record_and_log_as_they_were(tmp_path):
    """A refused resume used to rewrite .hydra/config.yaml and overrides.yaml first."""
    run = tmp_path / "finished"
    (run / ".hydra").mkdir(parents=True)
    before = {
        ".hydra/config.yaml": "seed: 1\n",
        ".hydra/overrides.yaml": "- seed=1\n",
        "run_simulation.log": "the run's own log\n",
    }
    for name, text in before.items():
        (run / name).write_text(text)
    line = _one_error_line(_cli("experiment.resume=true", f"hydra.run.dir={run}"))
    assert "config key 'experiment.resume' = true: no checkpoint" in line
    after = {str(p.relative_to(run)): p.read_text() for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_a_refusal_keeps_empty_folders_it_found_and_removes_those_it_made(tmp_path):
    found = tmp_path / "a" / "b" / "c"
    found.mkdir(parents=True)
    _one_error_line(_cli("communication.snr=nan", f"hydra.run.dir={found}"))
    assert found.is_dir() and not any(found.iterdir())
    made = tmp_path / "x" / "y" / "z"
    _one_error_line(_cli("communication.snr=nan", f"hydra.run.dir={made}"))
    assert not (tmp_path / "x").exists()
    sweep = tmp_path / "sweep" / "1"
    line = _one_error_line(
        _cli("communication.snr=1,nan", f"hydra.sweep.dir={sweep}", "-m", cwd=tmp_path)
    )
    assert "sweep point #1" in line
    assert not (tmp_path / "sweep").exists()  # no multirun.yaml left behind
    _one_error_line(_cli("communication.snr=nan", cwd=tmp_path))  # the default folder
    assert not (tmp_path / "outputs").exists()


def test_check_writable_leaves_nothing_behind_and_names_the_path(tmp_path):
    check_writable(tmp_path / "p" / "q")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(OSError) as info:
        check_writable(tmp_path / "f")
    assert info.value.filename == str(tmp_path / "f")
    with pytest.raises(OSError):
        check_writable(tmp_path / "f" / "below")
    with pytest.raises(FileNotFoundError):
        check_writable(FORBIDDEN)


def test_a_full_disk_is_one_line_naming_the_file_and_a_bug_keeps_its_traceback(capsys):
    with pytest.raises(SystemExit) as info, reported():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/run/results.parquet")
    assert info.value.code == 1
    assert capsys.readouterr().err.strip() == (
        "error: cannot write /data/run/results.parquet: No space left on device"
    )
    with pytest.raises(KeyError), reported():
        raise KeyError("a bug")
    assert one_line(ConfigError("x")) == "error: x"


def test_untouched_finds_a_folder_named_with_dots_and_leaves_an_unknown_one_alone(
    tmp_path, monkeypatch
):
    """hydra.run.dir=../runs/r1 is Hydra's <abspath>; ${...} is not known before Hydra."""
    run = tmp_path / "runs" / "r1"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("the run's own")
    (run / "run_simulation.log").write_text("its log")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    for args in (["hydra.run.dir=../runs/r1"], ["hydra.run.dir=${oc.env:RUN}"]):
        untouched = Untouched.take(args, "run_simulation.log")
        (run / ".hydra" / "config.yaml").write_text("rewritten by Hydra")
        untouched.restore(run)
        assert (run / "run_simulation.log").read_text() == "its log"
        (run / ".hydra" / "config.yaml").write_text("the run's own")
    assert Untouched.take(["hydra.run.dir=${oc.env:RUN}"], "x.log").folder is None


def test_untouched_restores_what_hydra_wrote(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("before")
    untouched = Untouched.take([f"hydra.run.dir={run}"], "task.log")
    (run / ".hydra" / "config.yaml").write_text("after")
    (run / ".hydra" / "hydra.yaml").write_text("new")
    (run / "task.log").write_text("new log")
    untouched.restore()
    assert [p.name for p in run.rglob("*") if p.is_file()] == ["config.yaml"]
    assert (run / ".hydra" / "config.yaml").read_text() == "before"
    assert Refused("error: x", run).__reduce__()[1] == ("error: x", run)  # and tests/test_errors


def test_one_splitter_keeps_quoted_values_whole_for_every_entry_point():
    from conf import split_overrides, sweep_points

    assert split_overrides("simulation='my label'  seed=1,2 x=\"a b\"") == [
        "simulation='my label'",
        "seed=1,2",
        'x="a b"',
    ]
    # a quoted comma is one value, not a sweep (it used to make two points)
    points = sweep_points("experiment=quick users.count=2 simulation='compr,snr'")
    assert [s.simulation for _, s in points] == ["compr,snr"]
    assert settings_from_overrides("simulation='a b' communication.snr=0").simulation == "a b"
    with pytest.raises(ConfigError, match="a ' quote is not closed"):
        split_overrides("simulation='open")


def test_identical_points_of_a_sweep_run_once():
    from conf import sweep_points

    points = sweep_points("experiment=quick users.count=2 seed=11,11,12")
    assert [s.seed for _, s in points] == [11, 12]


def test_a_run_config_file_carries_any_override_string_through_flowers_parser(tmp_path):
    """Flower's inline --run-config emptied simulation='my label'; a TOML file keeps it."""
    from flwr.common.config import parse_config_args

    from launch.federation import write_run_config

    values = {"overrides": "simulation='my label 🚀' seed=1,2 x=\"q\" ü\\n", "output-dir": "/a b"}
    path = write_run_config(tmp_path / "run.toml", values)
    assert parse_config_args([str(path)]) == values


@pytest.mark.slow
def test_users_that_do_not_connect_in_time_are_one_line_naming_the_keys(tmp_path):
    """experiment.node_timeout=1e-9 printed 79 lines of traceback."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "run_simulation.py", "experiment=quick", "users.count=2"]
        + ["experiment.node_timeout=1e-9", "experiment.node_timeout_per_user=0"]
        + [f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: users [0, 1] did not connect within 1e-09 s (experiment.node_timeout + "
        "experiment.node_timeout_per_user per user): in a simulation, give them longer; in a "
        "deployment, start one SuperNode per user with node config partition-id=0..1"
    ]


def test_a_failed_write_names_the_file_it_was_writing(tmp_path):
    """A full disk raises from write() with no file name: the error names the file."""
    from common.files import atomic_file

    target = tmp_path / "checkpoint.npz"
    with pytest.raises(OSError) as info, atomic_file(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert one_line(info.value) == f"error: cannot write {target}: No space left on device"
    assert list(tmp_path.iterdir()) == []  # the temporary is gone, nothing half-written
