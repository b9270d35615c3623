"""The results table (one row per user per run) and the per-round history.

Both runtimes (in-process driver, Flower strategy) fill these through the same
functions, so their tables are comparable column for column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.link import LinkConfig
from common.overhead import Ledger

RESULT_COLUMNS = (
    "method", "dataset", "seed", "ap_model", "user", "user_model", "channel_usage",
    "antennas_tx", "antennas_rx", "snr_db", "pilot_fraction", "n_pilots", "latent_dim_ap",
    "compression_factor", "symbols_per_sample", "rounds", "accuracy", "clean_accuracy", "mse",
    "power", "primal_residual", "bytes_down", "bytes_up", "messages", "wall_time_s",
)  # fmt: skip

HISTORY_COLUMNS = (
    "round", "objective", "primal_residual", "power", "mean_pilot_mse", "responded",
    "failures", "messages_down", "bytes_down", "messages_up", "bytes_up",
    "whitening_loading_ap", "whitening_loading_users",
)  # fmt: skip


@dataclass(frozen=True)
class RunInfo:
    """Everything a results row says about the run besides the measured values."""

    method: str
    dataset: str
    seed: int
    ap_model: str
    latent_dim_ap: int
    user_models: Mapping[int, str]
    link: LinkConfig
    pilot_fraction: float
    n_pilots: int
    rounds: int


def history_row(
    rnd: int,
    ap_metrics: Mapping[str, float],
    user_metrics: Mapping[int, Mapping[str, float]],
    failures: int,
    ledger: Ledger,
    ap_loading: float,
) -> dict[str, float]:
    """One round's line: objective = Σ_k users' reported local objectives."""
    objectives = [m["objective"] for m in user_metrics.values() if "objective" in m]
    mses = [m["pilot_mse"] for m in user_metrics.values() if "pilot_mse" in m]
    loadings = [m.get("whitening_loading", 0.0) for m in user_metrics.values()]
    return {
        "round": rnd,
        "objective": float(np.sum(objectives)) if objectives else float("nan"),
        "primal_residual": float(ap_metrics.get("primal_residual", float("nan"))),
        "power": float(ap_metrics.get("power", float("nan"))),
        "mean_pilot_mse": float(np.mean(mses)) if mses else float("nan"),
        "responded": len(user_metrics),
        "failures": failures,
        **ledger.round_totals("train", rnd),
        "whitening_loading_ap": ap_loading,
        "whitening_loading_users": float(max(loadings, default=0.0)),
    }


def result_rows(
    info: RunInfo,
    evaluation: Mapping[int, Mapping[str, float]],
    ap_metrics: Mapping[str, float],
    ledger: Ledger,
    wall_time_s: float,
) -> pd.DataFrame:
    """The results table of one run: one row per evaluated user."""
    totals = ledger.user_totals()
    rows = []
    for user in sorted(evaluation):
        metrics = evaluation[user]
        counts = totals.get(user, {"bytes_down": 0, "bytes_up": 0, "messages": 0})
        rows.append(
            {
                "method": info.method,
                "dataset": info.dataset,
                "seed": info.seed,
                "ap_model": info.ap_model,
                "user": user,
                "user_model": info.user_models[user],
                "channel_usage": info.link.channel_uses,
                "antennas_tx": info.link.antennas_tx,
                "antennas_rx": info.link.antennas_rx,
                "snr_db": info.link.snr_db,
                "pilot_fraction": info.pilot_fraction,
                "n_pilots": info.n_pilots,
                "latent_dim_ap": info.latent_dim_ap,
                "compression_factor": info.link.compression_factor(info.latent_dim_ap),
                "symbols_per_sample": info.link.tx_dim,
                "rounds": info.rounds,
                "accuracy": metrics["accuracy"],
                "clean_accuracy": metrics["clean_accuracy"],
                "mse": metrics["mse"],
                "power": float(ap_metrics.get("power", float("nan"))),
                "primal_residual": float(ap_metrics.get("primal_residual", float("nan"))),
                **counts,
                "wall_time_s": wall_time_s,
            }
        )
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
