"""What ``kill -9`` of the driver leaves running, and for how long (prints figures).

    python benchmarks/bench_kill.py            # the quick config, two users

Starts ``run_simulation.py`` on a long run, waits until round 2 is under way, kills
the driver with SIGKILL and counts, once a second, the Ray processes still alive
(by command line: raylet, GCS, workers, the dashboard and runtime-env agents), until
none is left or ``--limit`` seconds have passed.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RAY_MARKERS = ("raylet", "gcs_server", "ray::", "default_worker", "dashboard", "runtime_env")


def ray_processes() -> collections.Counter:
    """The Ray processes alive now, counted by kind (their command line's first word)."""
    found: collections.Counter = collections.Counter()
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if any(marker in line for marker in RAY_MARKERS) and "bench_kill" not in line:
            found[line.split()[0].rsplit("/", 1)[-1]] += 1
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=300.0, help="seconds to watch")
    args = parser.parse_args()
    if ray_processes():
        sys.exit(f"error: Ray processes are already running: {dict(ray_processes())}")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "run.log"
        with log.open("w") as out:
            driver = subprocess.Popen(
                [sys.executable, "run_simulation.py", "experiment=quick", "users.count=2"]
                + ["experiment.rounds=100000", f"hydra.run.dir={tmp}/run"],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 180
        while "round 2/" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        print(f"before the kill: {dict(ray_processes())}")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        killed = time.monotonic()
        while (left := ray_processes()) and time.monotonic() - killed < args.limit:
            print(f"{time.monotonic() - killed:5.0f} s after: {dict(left)}", flush=True)
            time.sleep(5)
        gone = time.monotonic() - killed
    print(f"all Ray processes gone {gone:.0f} s after the kill" if not left else f"left: {left}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
