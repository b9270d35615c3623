"""Many users: how a run's time and memory grow with the number of users K.

    .venv/bin/python benchmarks/bench_users.py [--users 8 32 128 512 1000]
        [--participation 1.0 0.1] [--rounds 30] [--skip-flower | --skip-in-process]
        [--flower-max 1000] [--supernodes N ...]

Each K runs the federated method over the embedded zoo's 8 models (users drawn in
turn, n = 3,500 pilots, 4x4 antennas, u = 4, 20 dB), in process and through Flower (the
simulated SuperNodes of ``experiment.supernodes``: one per user up to 64, then 64 serving
the users in turn; ``--supernodes`` names others, 0 one per user; 1 CPU each), at each
participation. Printed per run: wall
time, time per user-round (wall time over the users trained per round times the
rounds), peak memory machine-wide, mean accuracy; then the growth per doubling of K.

Targets on this machine: time per user-round within 1.3x from K = 8 to K = 1,000 (a
user's work does not change with K); Flower within 1.3x of in process at K = 1,000;
peak memory at K = 1,000 within 2x of K = 8; K = 1,000 at participation 0.1 through
Flower in <= 5 minutes. The full-participation time is printed beside the compute floor
it implies: a user's two ``m_k x n x Nt*u`` complex products per round (``Ȳ Rᴴ`` and
``Aᴴ Ȳ``) at this machine's measured complex matrix-product rate.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch.environment import quiet  # noqa: E402

quiet()

import numpy as np  # noqa: E402

from benchmarks._common import PeakMemory, verdict  # noqa: E402
from common.assets.source import AssetSource  # noqa: E402
from common.run.driver import run_experiment  # noqa: E402
from common.run.settings import RunSettings  # noqa: E402
from conf import settings as configured  # noqa: E402


def complex_gemm_rate(size: int = 1024) -> float:
    """This machine's complex matrix-product rate (multiply-adds per second, one thread)."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((size, size)) * (1 + 1j)
    with threadpool_limits(1):
        a @ a
        start = time.perf_counter()
        a @ a
        seconds = time.perf_counter() - start
    return size**3 / seconds


def floor_seconds(run: RunSettings, source: AssetSource, rate: float) -> float:
    """The user side's products alone at ``rate``: two ``m_k × n × Nt·u`` per user-round."""
    problem = source.problem()
    n = problem.n_pilots
    macs = sum(2 * -(-u.pilots.shape[1] // 2) * n * run.link.tx_dim for u in problem.users)
    return macs * run.experiment.rounds * run.consensus.participation / rate


def _in_process(run: RunSettings) -> tuple[float, float, int]:
    """The run in this (fresh, single-threaded) process: seconds to load its inputs and run
    it, mean accuracy, users evaluated."""
    start = time.perf_counter()
    outcome = run_experiment(AssetSource(run).problem(), run)
    wall = time.perf_counter() - start
    return wall, float(outcome.results.accuracy.mean()), len(outcome.results)


def one(run: RunSettings, flower: bool) -> dict:
    """One run in a fresh process (in process: a spawned worker; Flower: its simulation's
    own): wall time (in process: loading the inputs and running, without the worker's
    start), peak memory machine-wide, accuracy."""
    from launch.environment import worker_pool
    from launch.simulation import simulate, warm_assets

    if flower:
        warm_assets([run])  # as run_simulation.py does: the memory check, the cache
    with PeakMemory() as memory:  # both sides load their inputs within what is measured
        if flower:
            start = time.perf_counter()
            outcome = simulate(run)
            wall = time.perf_counter() - start
            accuracy, evaluated = float(outcome.results.accuracy.mean()), len(outcome.results)
        else:
            with worker_pool(1) as pool:
                wall, accuracy, evaluated = pool.submit(_in_process, run).result()
    per_round = max(1, math.ceil(run.num_users * run.consensus.participation))  # as Session draws
    trained = per_round * run.experiment.rounds
    return {
        "wall": wall,
        "per_user_round_ms": 1e3 * wall / trained,
        "memory_gib": memory.system / 2**30,
        "accuracy": accuracy,
        "evaluated": evaluated,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[8, 32, 128, 512, 1000])
    parser.add_argument("--participation", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--skip-flower", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--flower-max", type=int, default=1000, help="largest K through Flower")
    parser.add_argument(
        "--supernodes",
        type=int,
        nargs="+",
        default=[-1],
        help="Flower: simulated SuperNodes (-1: the default, experiment.supernodes=null; "
        "0: one per user); several values: one Flower run each",
    )
    args = parser.parse_args()

    rate = complex_gemm_rate()
    print(f"complex matrix products: {rate / 1e9:.2f} G multiply-adds/s on one thread")
    table: dict[tuple[str, float, int], dict] = {}
    for share in args.participation:
        for k in args.users:
            run = configured(
                f"users.count={k}",
                f"experiment.rounds={args.rounds}",
                f"consensus.participation={share}",
                "experiment.progress=false",
            )
            sides = [] if args.skip_in_process else [("in process", run)]
            if not args.skip_flower and k <= args.flower_max:
                for nodes in args.supernodes:
                    side = "Flower" if len(args.supernodes) == 1 else f"Flower/{nodes}"
                    chosen = None if nodes < 0 else (nodes or k)
                    sides.append((side, run.replace(**{"experiment.supernodes": chosen})))
            for side, point in sides:
                row = one(point, side != "in process")
                table[(side, share, k)] = row
                extra = ""
                if side == "in process" and share == 1.0:
                    floor = floor_seconds(run, AssetSource(run), rate)
                    extra = f"  (compute floor {floor:6.1f} s: {row['wall'] / floor:4.1f}x)"
                print(
                    f"K={k:5d} participation {share:4.2f} {side:10s}: {row['wall']:7.1f} s, "
                    f"{row['per_user_round_ms']:6.2f} ms per user-round, "
                    f"peak {row['memory_gib']:5.2f} GiB, accuracy {row['accuracy']:.4f} "
                    f"({row['evaluated']} users){extra}",
                    flush=True,
                )
    print("\ngrowth per doubling of K (time per user-round, peak memory):")
    for (side, share, k), row in sorted(table.items()):
        smaller = [kk for (s, p, kk) in table if (s, p) == (side, share) and kk < k]
        if smaller:
            base = table[(side, share, max(smaller))]
            doublings = np.log2(k / max(smaller))
            time_growth = (row["per_user_round_ms"] / base["per_user_round_ms"]) ** (1 / doublings)
            memory_growth = (row["memory_gib"] / base["memory_gib"]) ** (1 / doublings)
            print(
                f"  {side:10s} p={share:4.2f} K {max(smaller):4d} -> {k:4d}: "
                f"{time_growth:.2f}x time per user-round, {memory_growth:.2f}x memory"
            )
    first, last = min(args.users), max(args.users)
    print()
    if ("in process", 1.0, first) in table and ("in process", 1.0, last) in table:
        a, b = table[("in process", 1.0, first)], table[("in process", 1.0, last)]
        ratio = b["per_user_round_ms"] / a["per_user_round_ms"]
        print(verdict(f"time per user-round, K={last} / K={first}", ratio, 1.3, "x"))
        print(
            verdict(
                f"peak memory, K={last} / K={first}", b["memory_gib"] / a["memory_gib"], 2.0, "x"
            )
        )
    if ("Flower", 1.0, last) in table and ("in process", 1.0, last) in table:
        ratio = table[("Flower", 1.0, last)]["wall"] / table[("in process", 1.0, last)]["wall"]
        print(verdict(f"Flower / in process at K={last}", ratio, 1.3, "x"))
    if ("Flower", 0.1, last) in table:
        print(
            verdict(
                f"Flower, K={last}, participation 0.1",
                table[("Flower", 0.1, last)]["wall"],
                300,
                "s",
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
