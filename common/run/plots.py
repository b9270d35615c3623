"""Figures from results tables: accuracy (or MSE) against the compression factor.

    python -m common.run.plots multirun/2026-11-22 --out accuracy.png [--metric mse]

Reads every results.parquet below the given folders (or the given files), averages
over seeds and users, and draws one line per method and antenna pair with a
band of ± one standard deviation over seeds, as in the paper's figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def load_results(paths: list[str | Path]) -> pd.DataFrame:
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.rglob("results.parquet")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no results.parquet under {', '.join(map(str, paths))}")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def seed_summary(results: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Mean over users per run, then mean and std over seeds per method and setting."""
    keys = ["method", "antennas_tx", "antennas_rx", "snr_db", "channel_usage", "compression_factor"]
    per_run = results.groupby([*keys, "seed"], as_index=False)[metric].mean()
    return (
        per_run.groupby(keys, as_index=False)[metric]
        .agg(mean="mean", std="std", seeds="count")
        .fillna({"std": 0.0})
    )


def plot_against_compression(
    results: pd.DataFrame, out: str | Path, metric: str = "accuracy"
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = seed_summary(results, metric)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (method, ntx, nrx), part in summary.groupby(["method", "antennas_tx", "antennas_rx"]):
        part = part.sort_values("compression_factor")
        label = f"{method} {ntx}x{nrx}"
        ax.plot(part.compression_factor, part["mean"], marker="o", label=label)
        ax.fill_between(
            part.compression_factor,
            part["mean"] - part["std"],
            part["mean"] + part["std"],
            alpha=0.2,
        )
    ax.set_xlabel("compression factor ζ = u/m (%)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="results.parquet files or folders holding them")
    parser.add_argument("--out", default="accuracy_vs_compression.png")
    parser.add_argument("--metric", default="accuracy", choices=["accuracy", "mse"])
    args = parser.parse_args()
    results = load_results(args.paths)
    print(seed_summary(results, args.metric).to_string(index=False))
    print(f"wrote {plot_against_compression(results, args.out, args.metric)}")


if __name__ == "__main__":
    main()
