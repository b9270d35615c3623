"""The paper's main claim, measured on the embedded zoo with the in-process driver.

    .venv/bin/python benchmarks/paper_claims.py [--seeds 27 42 100] [--uses 1 2 4 8]

Mean accuracy over seeds (and over all default users) of federated, multi-link,
First-K and Top-K at u channel uses, 4x4 antennas, 20 dB. The paper reports
federated above First-K and Top-K across compression factors. Writes
results/paper_claims/results.parquet and accuracy_vs_compression.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from common.assets.source import AssetSource  # noqa: E402
from common.run.driver import run_experiment  # noqa: E402
from common.run.plots import figure_compression, seed_summary  # noqa: E402
from common.run.reporting import write_tables  # noqa: E402
from conf import settings  # noqa: E402

METHODS = ("federated", "multi_link", "first_k", "top_k")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[27, 42, 100])
    parser.add_argument("--uses", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--snr", type=float, default=20.0)
    parser.add_argument("--group", default="all")
    parser.add_argument("--out", default="results/paper_claims")
    args = parser.parse_args()

    base = settings(f"users.group={args.group}", "experiment.progress=false")
    frames = []
    grid = [(s, m, u) for s in args.seeds for m in METHODS for u in args.uses]
    problems = {}
    for seed, method, uses in tqdm(grid, desc="runs"):
        point = base.replace(
            seed=seed, **{"strategy.name": method}, channel_uses=uses, snr_db=args.snr
        )
        if seed not in problems:  # the pilots depend on the seed only
            problems[seed] = AssetSource(point).problem()
        frames.append(run_experiment(problems[seed], point).results)
    results = pd.concat(frames, ignore_index=True)
    write_tables(args.out, {"results": results})
    summary = seed_summary(results)
    table = summary.pivot(index="channel_usage", columns="method", values="mean")[list(METHODS)]
    spread = summary.pivot(index="channel_usage", columns="method", values="std")[list(METHODS)]
    table.insert(0, "zeta_%", summary.groupby("channel_usage").compression_factor.first())
    print(f"\nmean accuracy over seeds {args.seeds} ({args.group} users, 4x4, {args.snr:g} dB)")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print("\nstd over seeds")
    print(spread.to_string(float_format=lambda v: f"{v:.4f}"))
    wins = (table.federated > table[["first_k", "top_k"]].max(axis=1)).sum()
    print(f"\nfederated above both First-K and Top-K at {wins}/{len(table)} compression factors")
    print(f"wrote {figure_compression(results, Path(args.out) / 'accuracy_vs_compression.png')}")


if __name__ == "__main__":
    main()
