"""The paper's accuracy-vs-ζ grid through Flower sweeps and in process: wall time, cost per point.

    .venv/bin/python benchmarks/bench_study.py [--seeds 27 42 100] [--uses 1 2 4 6 8 10 20]
        [--in-flight 8]

The grid: every u, the square antenna pairs 1×1, 2×2, 4×4, the given seeds, the
four methods, the 8 default users of the embedded zoo, 30 rounds, 20 dB. Every
run starts from an empty point store. Prints the wall time of the whole grid in
process (one process), in process over one process per core (what
``launch.figures --in-process`` does) and through Flower (one simulation for
all points, ``--in-flight`` of them sharing each round), the ratio, and the
fixed cost per point inside the sweep: Flower's time per point minus the
single-process time per point. Targets: grid <= 20 min, fixed cost <= 1 s per point.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import verdict  # noqa: E402
from common.assets.source import AssetSource  # noqa: E402
from common.run.driver import run_experiment  # noqa: E402
from common.run.points import PointStore  # noqa: E402
from common.run.study import StudyGrid, compression_points  # noqa: E402
from conf import settings  # noqa: E402
from launch.simulation import simulate_sweep  # noqa: E402
from launch.sweeps import run_unfinished  # noqa: E402
from server.sweep import POINTS_IN_FLIGHT  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[27, 42, 100])
    parser.add_argument("--uses", type=int, nargs="+", default=[1, 2, 4, 6, 8, 10, 20])
    parser.add_argument("--in-flight", type=int, default=POINTS_IN_FLIGHT)
    args = parser.parse_args()
    base = settings("experiment.progress=false")
    grid = StudyGrid(
        seeds=tuple(args.seeds), channel_uses=tuple(args.uses), top_k_channel_uses=tuple(args.uses)
    )
    points = compression_points(base, grid)
    AssetSource(base).warm(progress=False)
    print(
        f"{len(points)} points: u {args.uses}, pairs 1x1 2x2 4x4, seeds {args.seeds}, 4 methods, "
        f"{base.num_users} users, {base.experiment.rounds} rounds, {args.in_flight} in flight"
    )

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        problems = {seed: AssetSource(base.replace(seed=seed)).problem() for seed in args.seeds}
        for point in points:
            run_experiment(problems[point.seed], point)
        in_process = time.perf_counter() - started
        started = time.perf_counter()
        run_unfinished(PointStore(Path(folder) / "parallel"), points, in_process=True)
        parallel = time.perf_counter() - started
        started = time.perf_counter()
        outcomes = simulate_sweep(
            points, PointStore(Path(folder) / "points"), in_flight=args.in_flight
        )
        flower = time.perf_counter() - started
    fixed = (flower - in_process) / len(points)
    mean_accuracy = sum(o.results.accuracy.mean() for o in outcomes) / len(outcomes)
    print(f"in process : {in_process:7.1f} s ({in_process / len(points):.2f} s per point)")
    print(
        f"in process, {os.cpu_count()} processes: {parallel:7.1f} s "
        f"({in_process / parallel:.2f}x faster; run_unfinished(in_process=True))"
    )
    print(f"Flower     : {flower:7.1f} s ({flower / len(points):.2f} s per point, one simulation)")
    print(
        f"ratio Flower / in process {flower / in_process:.2f}x; fixed cost per point "
        f"{fixed:.2f} s; mean accuracy over points {mean_accuracy:.4f}"
    )
    print(verdict("whole grid through Flower", flower / 60, 20, "min"))
    print(verdict("fixed cost per point in a sweep", fixed, 1.0, "s"))


if __name__ == "__main__":
    main()
