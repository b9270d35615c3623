"""Alignment engine: a paper-sized in-process run and a scaling series.

    .venv/bin/python benchmarks/bench_engine.py [--skip-zoo] [--max-n 50000]

1. All default embedded users, 30 rounds, u = 4, 4x4, 20 dB, every training
   image of mnist5k as a pilot: wall time and peak memory (target <= 5 s).
2. Synthetic latents, AP dim 192, 4 users of dim 192/384/768, n = 1k ... 50k
   pilots: wall time per run and the ratio between successive doublings of n
   (target <= 2.2x per doubling).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from benchmarks._common import measure, verdict  # noqa: E402
from common.run.driver import run_experiment  # noqa: E402
from common.run.sources import SyntheticSource  # noqa: E402
from conf import settings  # noqa: E402

# The default run (federated, 30 rounds, u = 4, 4x4, 20 dB, all pilots, seed 42).
DEFAULT = settings("experiment.progress=false")


def paper_sized() -> None:
    from common.assets.source import AssetSource

    problem = AssetSource(DEFAULT).problem()  # the default run: embedded zoo, all users
    result, wall, peak = measure(lambda: run_experiment(problem, DEFAULT))
    print(
        f"\n[1] paper-sized in-process run: {len(problem.users)} users, n = {problem.n_pilots} "
        f"pilots, 30 rounds, u = 4, 4x4, 20 dB"
    )
    print(
        f"    wall {wall:.2f} s, peak traced memory {peak:.0f} MiB, "
        f"mean accuracy {result.results.accuracy.mean():.4f}"
    )
    print("    " + verdict("paper-sized run", wall, 5.0, "s"))


def scaling(max_n: int) -> None:
    ns = [n for n in (1_000, 2_000, 5_000, 10_000, 20_000, 50_000) if n <= max_n]
    rows = []
    for n in ns:
        source = SyntheticSource(
            n=n, n_test=1_000, ap_dim=192, user_dims=(192, 384, 768, 384), classes=10, seed=0
        )
        problem = source.problem()
        config = DEFAULT.replace(models=tuple(u.name for u in problem.users))
        _, wall, peak = measure(lambda p=problem, c=config: run_experiment(p, c))
        rows.append({"n": n, "wall_s": wall, "peak_MiB": peak})
    table = pd.DataFrame(rows)
    table["s_per_1k_pilots"] = table.wall_s / (table.n / 1000)
    print("\n[2] scaling on synthetic latents (AP 192, users 192/384/768/384, 30 rounds, u=4, 4x4)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for a, b in zip(rows, rows[1:], strict=False):
        ratio = (b["wall_s"] / a["wall_s"]) / (b["n"] / a["n"] / 2)
        print("    " + verdict(f"cost per doubling {a['n']}->{b['n']}", ratio, 2.2, "x"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-zoo", action="store_true", help="only the synthetic series")
    parser.add_argument("--max-n", type=int, default=50_000)
    args = parser.parse_args()
    if not args.skip_zoo:
        paper_sized()
    scaling(args.max_n)


if __name__ == "__main__":
    main()
