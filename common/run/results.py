"""The results table (one row per user per run), the per-round history, the outcome.

Both runtimes fill these through one :class:`~common.run.session.Session`, so
their tables are comparable column for column. :class:`RunOutcome` is what a
run returns and what its output folder holds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.files import atomic_file
from common.maths.compression import compressed_dim
from common.maths.fading import PERFECT_CSI, RAYLEIGH, ChannelConfig, CsiConfig
from common.maths.link import LinkConfig
from common.parties.ledger import RUN_PHASES, Ledger
from common.parties.user import assets_fingerprint
from common.run.reporting import write_tables
from common.run.sources import fingerprint

# the groups of users and the downlink streams they receive (results written before the
# clustered method lack them; common.run.plots.with_streams fills them in)
STREAM_COLUMNS = (
    "grouping",
    "groups",
    "group",
    "streams_down",
    "stream_bytes_down",
    "channel_uses_down",
)
RESULT_COLUMNS = (
    "method",
    "dataset",
    "seed",
    "ap_model",
    "user",
    "user_model",
    "user_group",
    "num_users",
    "channel_usage",
    "antennas_tx",
    "antennas_rx",
    "snr_db",
    "pilot_fraction",
    "n_pilots",
    "latent_dim_ap",
    "compression_factor",
    "channel_usage_effective",
    "compression_factor_effective",
    "symbols_per_sample",
    "rounds",
    "accuracy",
    "clean_accuracy",
    "mse",
    "power",
    "primal_residual",
    "bytes_down",
    "bytes_up",
    "messages",
    *STREAM_COLUMNS,
    "wall_time_s",
    "aggregator",
    "participation",
    "faulty_users",
    "fault",
    "channel_model",
    "correlation",
    "k_factor",
    "coherence_uses",
    "csi",
    "csi_snr_db",
    "ageing",
    "ap_assets",
    "user_assets",
    "zoo",
)

HISTORY_COLUMNS = (
    "round",
    "objective",
    "primal_residual",
    "power",
    "mean_pilot_mse",
    "responded",
    "failures",
    "trimmed_per_end",
    "messages_down",
    "bytes_down",
    "messages_up",
    "bytes_up",
    "groups",
    "streams_down",
    "stream_bytes_down",
    "channel_uses_down",
    "whitening_loading_ap",
    "whitening_loading_users",
    "min_distinct_pilots",
    "seconds",
)
FAILURE_COLUMNS = ("round", "stage", "user", "reason")
# the deployment phase (tracking.*): one row per slot and user; the overhead columns count
# what the refreshes have cost that user so far (pilots received, bytes each way, channel
# uses of its pilots' streams) and the AP's refresh rounds so far
TRACKING_COLUMNS = (
    "slot",
    "time_s",
    "user",
    "accuracy",
    "mse",
    "refreshed",
    "overhead_pilots",
    "overhead_rounds",
    "overhead_bytes_down",
    "overhead_bytes_up",
    "overhead_channel_uses",
)
PRECODERS_FILE = "precoders.npz"


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
    side_channel_uses: int = 0  # channel uses of side information (Top-K's indices)
    user_group: str = ""  # the zoo group the users came from
    aggregator: str = "mean"  # the consensus rule
    participation: float = 1.0  # share of users trained with per round
    faulty_users: int = 0  # users 0..faulty_users-1 corrupt their uplinks
    fault: str = ""  # how (empty when none is faulty)
    channel: ChannelConfig = RAYLEIGH  # the channel model
    csi: CsiConfig = PERFECT_CSI  # the users' channel knowledge
    ap_assets: str = ""  # the fingerprint of the AP's latents (APInputs.fingerprint)
    grouping: str = ""  # how the clustered method grouped users (empty for the others)


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
    distinct = [m["distinct_pilots"] for m in user_metrics.values() if "distinct_pilots" in m]
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
        "min_distinct_pilots": float(min(distinct, default=float("nan"))),
    }


def result_rows(
    info: RunInfo,
    evaluation: Mapping[int, Mapping[str, float]],
    ap_metrics: Mapping[str, float],
    ledger: Ledger,
    wall_time_s: float,
    groups: Mapping[int, int] | None = None,
) -> pd.DataFrame:
    """The results table of one run: one row per evaluated user.

    ``groups`` gives each user's group (the users of one downlink stream; default: all
    in group 0); the ``groups`` column counts them. ``bytes_down`` counts each user's
    downlink; ``stream_bytes_down`` the bytes on air, each stream once; ``streams_down``
    the training rounds' streams and ``channel_uses_down`` theirs, ``n`` pilots ×
    (``u`` + side information) each.
    """
    totals = ledger.user_totals(RUN_PHASES)  # a deployment phase's are in tracking.csv
    effective = info.link.channel_uses + info.side_channel_uses
    streams = ledger.stream_totals(RUN_PHASES)
    groups = dict(groups or {})
    m_ap = compressed_dim(info.latent_dim_ap)
    users = {user: assets_fingerprint(evaluation[user]) for user in sorted(evaluation)}
    # the zoo: the AP's assets and every evaluated user's, in user order ('' if one is unknown)
    zoo = fingerprint(info.ap_assets, *users.values())
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
                "user_group": info.user_group,
                "num_users": len(info.user_models),
                "channel_usage": info.link.channel_uses,
                "antennas_tx": info.link.antennas_tx,
                "antennas_rx": info.link.antennas_rx,
                "snr_db": info.link.snr_db,
                "pilot_fraction": info.pilot_fraction,
                "n_pilots": info.n_pilots,
                "latent_dim_ap": info.latent_dim_ap,
                "compression_factor": info.link.compression_factor(info.latent_dim_ap),
                "channel_usage_effective": effective,
                "compression_factor_effective": 100.0 * effective / m_ap,
                "symbols_per_sample": info.link.tx_dim,
                "rounds": info.rounds,
                "accuracy": metrics["accuracy"],
                "clean_accuracy": metrics["clean_accuracy"],
                "mse": metrics["mse"],
                "power": float(ap_metrics.get("power", float("nan"))),
                "primal_residual": float(ap_metrics.get("primal_residual", float("nan"))),
                **counts,
                "grouping": info.grouping,
                "groups": len(set(groups.values())) or 1,
                "group": groups.get(user, 0),
                **streams,
                "channel_uses_down": streams["streams_down"] * info.n_pilots * effective,
                "wall_time_s": wall_time_s,
                "aggregator": info.aggregator,
                "participation": info.participation,
                "faulty_users": info.faulty_users,
                "fault": info.fault,
                "channel_model": info.channel.model,
                "correlation": info.channel.correlation,
                "k_factor": info.channel.k_factor,
                "coherence_uses": info.channel.coherence_uses,
                "csi": info.csi.estimation,
                # in effect only for an estimate; perfect knowledge is an infinite SNR
                "csi_snr_db": math.inf if info.csi.estimation == "perfect" else info.csi.csi_snr_db,
                "ageing": info.csi.ageing,
                "ap_assets": info.ap_assets,
                "user_assets": users[user],
                "zoo": zoo,
            }
        )
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


@dataclass
class RunOutcome:
    """Everything a finished run reports: per-user results, history, failures, precoders."""

    results: pd.DataFrame
    history: pd.DataFrame
    failures: pd.DataFrame
    precoders: dict[str, np.ndarray]
    wall_time_s: float
    # the deployment phase's slots (tracking.*; empty, and not written, without one)
    tracking: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=list(TRACKING_COLUMNS))
    )

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = {"results": self.results, "history": self.history, "failures": self.failures}
        return tables | ({"tracking": self.tracking} if len(self.tracking) else {})

    def save(self, out_dir: str | Path) -> list[Path]:
        """The tables (parquet/csv) and the learned precoders (npz), each written atomically.

        A run in which no user was evaluated is refused (:class:`NoResults`) before
        anything is written: an empty results table is never left behind.
        """
        if self.results.empty:
            raise NoResults(self.failures)
        written = write_tables(out_dir, self.tables())
        path = Path(out_dir) / PRECODERS_FILE
        with atomic_file(path) as handle:  # a file object: np.savez would append ".npz" to a name
            np.savez(handle, **self.precoders)
        return [*written, path]

    @classmethod
    def load(cls, out_dir: str | Path) -> RunOutcome:
        """Read back what :meth:`save` wrote (``FileNotFoundError`` if the run wrote nothing)."""
        folder = Path(out_dir)
        results = pd.read_parquet(folder / "results.parquet")
        with np.load(folder / PRECODERS_FILE) as npz:
            precoders = {name: npz[name] for name in npz.files}
        return cls(
            results=results,
            history=pd.read_csv(folder / "history.csv"),
            failures=pd.read_csv(folder / "failures.csv", dtype={"reason": str}),
            precoders=precoders,
            wall_time_s=float(results.wall_time_s.iloc[0]) if len(results) else float("nan"),
            **(
                {"tracking": pd.read_csv(folder / "tracking.csv")}
                if (folder / "tracking.csv").is_file()
                else {}
            ),
        )


class NoResults(RuntimeError):
    """Every user failed: the run has no results to keep.

    Parameters
    ----------
    failures : DataFrame or str
        The run's failures table (the message names each user's last failure, the first
        five), or the message itself (how a copy in another process is rebuilt).
    """

    def __init__(self, failures: pd.DataFrame | str) -> None:
        if isinstance(failures, str):
            super().__init__(failures)
            return
        last = failures.drop_duplicates("user", keep="last") if len(failures) else failures
        reasons = "; ".join(
            f"user {r.user} ({r.stage}, round {r.round}): {r.reason}"
            for r in last.head(5).itertuples()
        )
        super().__init__(
            "every user failed, so the run has no results (nothing was written)"
            + (f": {reasons}" if reasons else "")
        )
