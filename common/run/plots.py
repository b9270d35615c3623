"""Figures and summary tables from results tables, as the paper draws them.

    python -m common.run.plots multirun/2026-11-22 --out accuracy.png [--metric mse]

Every figure averages over users per run, then shows the mean over seeds with
a band of ± one standard deviation. Compression is on the *effective* ζ: the
channel uses of the values plus those of per-sample side information (Top-K's
indices), as a percentage of the AP's complex latent size.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from common.run.results import STREAM_COLUMNS

ZETA = "compression_factor_effective"
ZETA_LABEL = "effective compression factor ζ (% of the AP's complex latent size)"
LABELS = {
    "accuracy": "accuracy (fraction of test images correct)",
    "mse": "MSE per latent entry (user's space)",
}
SHORT_LABELS = {"accuracy": "network accuracy (fraction)", "mse": "network MSE per latent entry"}
METHOD_NAMES = {
    "federated": "federated (shared F)",
    "multi_link": "multi-link (F per user)",
    "first_k": "First-K",
    "top_k": "Top-K",
    "eigen_k": "Eigen-K",
    "clustered": "clustered",
}
KEYS = [
    "method",
    "user_group",
    "num_users",
    "pilot_fraction",
    "antennas_tx",
    "antennas_rx",
    "snr_db",
    "channel_usage",
    ZETA,
    "aggregator",
    "participation",
    "faulty_users",
    "channel_model",
    "correlation",
    "k_factor",
    "csi",
    "csi_snr_db",
    "ageing",
]


def load_results(paths: Sequence[str | Path]) -> pd.DataFrame:
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.rglob("results.parquet")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no results.parquet under {', '.join(map(str, paths))}")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def seed_summary(results: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Mean over users per run, then mean and std over seeds per setting."""
    keys = [k for k in KEYS if k in results]
    per_run = results.groupby([*keys, "seed"], as_index=False, dropna=False)[metric].mean()
    return (
        per_run.groupby(keys, as_index=False, dropna=False)[metric]
        .agg(mean="mean", std="std", seeds="count")
        .fillna({"std": 0.0})
    )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _line(ax, part: pd.DataFrame, x: str, label: str) -> None:
    part = part.sort_values(x)
    line = ax.plot(part[x], part["mean"], marker="o", markersize=3, label=label)[0]
    ax.fill_between(
        part[x],
        part["mean"] - part["std"],
        part["mean"] + part["std"],
        color=line.get_color(),
        alpha=0.15,
    )


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:  # a figure laid out by its own engine keeps it
        fig.tight_layout()
    fig.savefig(out, dpi=130)
    _pyplot().close(fig)
    return out


def figure_compression(results: pd.DataFrame, out: str | Path, metric: str = "accuracy") -> Path:
    """``metric`` vs effective ζ (see :func:`draw_compression`), saved as PNG."""
    return _save(draw_compression(results, metric), out)


def draw_compression(results: pd.DataFrame, metric: str = "accuracy"):
    """``metric`` vs effective ζ: one panel per antenna pair, one line per method."""
    plt = _pyplot()
    summary = seed_summary(results, metric)
    pairs = sorted(set(zip(summary.antennas_tx, summary.antennas_rx, strict=True)))
    fig, axes = plt.subplots(
        1, len(pairs), figsize=(4.2 * len(pairs), 3.6), squeeze=False, sharey=True
    )
    for ax, (n_tx, n_rx) in zip(axes[0], pairs, strict=True):
        at = summary[(summary.antennas_tx == n_tx) & (summary.antennas_rx == n_rx)]
        for method in [m for m in METHOD_NAMES if m in set(at.method)]:
            _line(ax, at[at.method == method], ZETA, METHOD_NAMES[method])
        ax.set_title(f"{n_tx}×{n_rx} antennas (Nt×Nr)")
        ax.set_xlabel(ZETA_LABEL, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(LABELS[metric])
    axes[0][-1].legend(fontsize=8)
    return fig


def figure_snr(results: pd.DataFrame, out: str | Path) -> Path:
    """Accuracy vs SNR (see :func:`draw_snr`), saved as PNG."""
    return _save(draw_snr(results), out)


def draw_snr(results: pd.DataFrame):
    """Accuracy vs SNR: one line per method and channel-use count."""
    plt = _pyplot()
    summary = seed_summary(results, "accuracy")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (method, uses, zeta), part in summary.groupby(["method", "channel_usage", ZETA]):
        name = METHOD_NAMES.get(method, method)
        _line(ax, part, "snr_db", f"{name}, u={uses} (effective ζ={zeta:.1f}%)")
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel(LABELS["accuracy"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def figure_groups(results: pd.DataFrame, out: str | Path) -> Path:
    """User groups per pilot fraction (see :func:`draw_groups`), saved as PNG."""
    return _save(draw_groups(results), out)


def draw_groups(results: pd.DataFrame):
    """Heterogeneous vs homogeneous users: network accuracy and MSE vs ζ per pilot fraction."""
    plt = _pyplot()
    fractions = sorted(set(results.pilot_fraction), reverse=True)
    fig, axes = plt.subplots(
        2, len(fractions), figsize=(4.2 * len(fractions), 6.4), squeeze=False, sharex=True
    )
    for row, metric in enumerate(("accuracy", "mse")):
        summary = seed_summary(results, metric)
        for col, fraction in enumerate(fractions):
            ax = axes[row][col]
            for group, part in summary[summary.pilot_fraction == fraction].groupby("user_group"):
                _line(ax, part, ZETA, f"{group} users")
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"semantic pilots: {100 * fraction:g}% of the training split")
            else:
                ax.set_xlabel(ZETA_LABEL, fontsize=8)
            if col == 0:
                ax.set_ylabel(SHORT_LABELS[metric])
    axes[0][-1].legend(fontsize=8)
    return fig


HEADERS = {
    ZETA: "ζ eff. (%)",
    "snr_db": "SNR (dB)",
    "antennas_tx": "Nt (=Nr)",
    "antennas_rx": "Nr",
    "channel_usage": "u",
    "pilot_fraction": "pilots",
    "user_group": "users",
    "num_users": "K",
}


def figure_faults(results: pd.DataFrame, out: str | Path) -> Path:
    """Accuracy of each consensus rule vs the number of users sending noise."""
    return _save(draw_faults(results), out)


def draw_faults(results: pd.DataFrame):
    """Accuracy vs the number of faulty users: one line per consensus rule."""
    users = int(results.user.nunique())
    return _lines_figure(
        results,
        ["aggregator"],
        "faulty_users",
        lambda rule: str(rule),
        xlabel=f"faulty users (of {users}; each sends noise, 100x its uplink's RMS)",
        title="consensus rules under faulty users",
        legend="aggregator",
        integer_x=True,
    )


def figure_participation(results: pd.DataFrame, out: str | Path) -> Path:
    """Accuracy vs the share of users the AP trains with per round."""
    return _save(draw_participation(results), out)


def draw_participation(results: pd.DataFrame):
    """Accuracy vs participation: one line per channel-use count."""
    return _lines_figure(
        results,
        ["channel_usage", ZETA],
        "participation",
        lambda uses, zeta: f"u = {uses} (ζ = {zeta:.1f} %)",
        xlabel="participation (share of users trained with per round)",
        title="federated, partial participation",
        legend="channel uses",
    )


def _lines_figure(results, by, x, label, *, xlabel, title, legend, integer_x=False):
    """One panel of accuracy vs ``x``, a line (mean ± std over seeds) per ``by`` group."""
    plt = _pyplot()
    summary = seed_summary(results, "accuracy")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for key, part in summary.groupby(by):
        _line(ax, part, x, label(*(key if isinstance(key, tuple) else (key,))))
    ax.set(xlabel=xlabel, ylabel=LABELS["accuracy"], title=title)
    if integer_x:
        ax.set_xticks(sorted(results[x].unique()))
    ax.grid(alpha=0.3)
    ax.legend(title=legend)
    return fig


def figure_users(results: pd.DataFrame, out: str | Path, metric: str = "accuracy") -> Path:
    """``metric`` vs the number of users (see :func:`draw_users`)."""
    return _save(draw_users(results, metric), out)


def draw_users(results: pd.DataFrame, metric: str = "accuracy"):
    """``metric`` vs the number of users K (log scale), full participation: a panel per
    user group, a line per method and channel-use count."""
    plt = _pyplot()
    summary = seed_summary(results[results.participation == 1.0], metric)
    groups = sorted(summary.user_group.unique())
    fig, axes = plt.subplots(
        1, len(groups), figsize=(5.5 * len(groups), 4), sharey=True, squeeze=False
    )
    for ax, group in zip(axes[0], groups, strict=True):
        part = summary[summary.user_group == group]
        for (method, uses), line in part.groupby(["method", "channel_usage"]):
            _line(ax, line, "num_users", f"{METHOD_NAMES.get(method, method)}, u = {uses}")
        counts = sorted(part.num_users.unique())
        ax.set(xscale="log", xlabel="users K", ylabel=LABELS[metric], title=f"{group} users")
        ax.set_xticks(counts, [str(k) for k in counts])
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # off the lines
    fig.tight_layout()
    return fig


def figure_users_participation(results: pd.DataFrame, out: str | Path) -> Path:
    """Accuracy vs participation with many users (federated)."""
    k = int(results.num_users.max())
    fig = _lines_figure(
        results[results.num_users == k],
        ["channel_usage", ZETA],
        "participation",
        lambda uses, zeta: f"u = {uses} (ζ = {zeta:.1f} %)",
        xlabel="participation (share of users trained with per round)",
        title=f"federated, K = {k} users",
        legend="channel uses",
    )
    return _save(fig, out)


def figure_channels(results: pd.DataFrame, out: str | Path) -> Path:
    """Accuracy under channel models and channel knowledge (see :func:`draw_channels`)."""
    return _save(draw_channels(results), out)


def draw_channels(results: pd.DataFrame):
    """Four panels: accuracy vs antenna correlation, vs Rician K, vs the SNR of channel
    estimation (perfect CSI as a dashed line), and vs channel ageing."""
    plt = _pyplot()
    summary = seed_summary(results, "accuracy")
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.2), sharey=True)
    rayleigh = summary[(summary.channel_model == "rayleigh")]
    perfect = rayleigh[(rayleigh.csi == "perfect")]
    panels = [
        (
            summary[summary.channel_model == "correlated"],
            "correlation",
            "method",
            "exponential antenna correlation ρ (both ends)",
            "spatially correlated MIMO",
        ),
        (
            summary[summary.channel_model == "rician"],
            "k_factor",
            "method",
            "Rician K-factor (linear)",
            "Rician MIMO",
        ),
        (
            rayleigh[rayleigh.csi != "perfect"],
            "csi_snr_db",
            "csi",
            "SNR of the channel-estimation training symbols (dB)",
            "imperfect CSI (federated)",
        ),
        (
            perfect[perfect.csi_snr_db == perfect.csi_snr_db.max()],
            "ageing",
            "method",
            "correlation between training and test channel",
            "channel ageing (Gauss–Markov)",
        ),
    ]
    for ax, (part, x, by, xlabel, title) in zip(axes.flat, panels, strict=True):
        for key, lines in part.groupby(by):
            name = METHOD_NAMES.get(key, f"{str(key).upper()} estimate")
            _line(ax, lines, x, name)
        ax.set(xlabel=xlabel, title=title)
        ax.grid(alpha=0.3)
    reference = perfect[(perfect.method == "federated") & (perfect.ageing == 1.0)]
    if not reference.empty:
        axes[1][0].axhline(
            float(reference["mean"].iloc[0]), color="k", ls="--", label="perfect CSI"
        )
    k_values = sorted(summary[summary.channel_model == "rician"].k_factor.unique())
    if k_values and max(k_values) > 0:  # K spans decades: linear below 1, log above
        axes[0][1].set_xscale("symlog", linthresh=1.0)
        axes[0][1].set_xlim(left=0)
        axes[0][1].set_xticks(k_values, [f"{k:g}" for k in k_values])
    for ax in axes.flat:
        if ax.get_lines():
            ax.legend(fontsize=8)
    for row in axes:
        row[0].set_ylabel(LABELS["accuracy"])
    return fig


def with_streams(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with the group and stream columns filled in rows written before they
    existed, for the federated (one stream) and multi-link (one per user) methods, each
    user sent every round's downlink: ``stream_bytes_down`` is a user's ``bytes_down``
    (times K for multi-link), ``channel_uses_down`` ``rounds · n · u_eff`` (times K).
    Other methods' old rows keep NaN there."""
    out = results.copy()
    for column in STREAM_COLUMNS:
        if column not in out:
            out[column] = "" if column == "grouping" else math.nan
    out["grouping"] = out["grouping"].fillna("")
    for method, per_user in (("federated", False), ("multi_link", True)):
        old = (out.method == method) & out.stream_bytes_down.isna()
        streams = out.num_users[old] if per_user else 1
        out.loc[old, "groups"] = streams
        out.loc[old, "streams_down"] = out.rounds[old] * streams
        out.loc[old, "stream_bytes_down"] = out.bytes_down[old] * streams
        uses = out.rounds[old] * out.n_pilots[old] * out.channel_usage_effective[old]
        out.loc[old, "channel_uses_down"] = uses * streams
    return out


def cluster_summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (K, method, grouping, C): accuracy mean and std over seeds (of each
    run's mean over users), and the run's downlink on air (``stream_bytes_down``, MB) and
    training channel uses (``channel_uses_down``)."""
    results = with_streams(results).dropna(subset=["groups"]).astype({"groups": int})
    keys = ["user_group", "num_users", "method", "grouping", "groups"]
    per_run = results.groupby([*keys, "seed"], as_index=False).agg(
        accuracy=("accuracy", "mean"),
        mb_down=("stream_bytes_down", "first"),
        uses_down=("channel_uses_down", "first"),
    )
    per_run["mb_down"] = per_run["mb_down"] / 1e6
    summary = per_run.groupby(keys, as_index=False).agg(
        mean=("accuracy", "mean"),
        std=("accuracy", "std"),
        seeds=("seed", "count"),
        mb_down=("mb_down", "mean"),
        uses_down=("uses_down", "mean"),
    )
    return summary.fillna({"std": 0.0}).sort_values(keys, ignore_index=True)


def _cluster_label(method: str, grouping: str) -> str:
    if method == "clustered":
        return "clustered, by model" if grouping == "model" else "clustered, k-means"
    return METHOD_NAMES.get(method, method)


def figure_clusters(results: pd.DataFrame, out: str | Path) -> Path:
    """Accuracy and downlink bytes vs the number of groups C (see :func:`draw_clusters`)."""
    return _save(draw_clusters(results), out)


def draw_clusters(results: pd.DataFrame):
    """Two panels against the number of groups C (log scale): accuracy, and the downlink
    bytes on air (each stream once). Per user group and K, one line from federated
    (C = 1) through k-means to multi-link (C = K); grouping by model is a star."""
    plt = _pyplot()
    summary = cluster_summary(results)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    styles = dict(zip(sorted(summary.user_group.unique()), ("-", "--", ":", "-."), strict=False))
    for (group, k), part in summary.groupby(["user_group", "num_users"]):
        spectrum = part[(part.method != "clustered") | (part.grouping == "kmeans")]
        spectrum = spectrum.sort_values("groups")
        for ax, y in zip(axes, ("mean", "mb_down"), strict=True):
            line = ax.plot(
                spectrum.groups,
                spectrum[y],
                marker="o",
                markersize=4,
                linestyle=styles[group],
                label=f"{group}, K = {k}",
            )
            if y == "mean":
                ax.fill_between(
                    spectrum.groups,
                    spectrum["mean"] - spectrum["std"],
                    spectrum["mean"] + spectrum["std"],
                    color=line[0].get_color(),
                    alpha=0.15,
                )
            model = part[(part.method == "clustered") & (part.grouping == "model")]
            ax.plot(
                model.groups, model[y], marker="*", markersize=12, linestyle="none",
                color=line[0].get_color(), label=f"{group}, K = {k}, grouped by model",
            )  # fmt: skip
    counts = sorted(summary.groups.unique())
    for ax, ylabel in zip(
        axes,
        (LABELS["accuracy"], "downlink on air, all rounds (MB, each stream once)"),
        strict=True,
    ):
        ax.set(xscale="log", xlabel="groups C (1: federated; K: multi-link)", ylabel=ylabel)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[1].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    axes[0].set_title("accuracy vs groups (k-means on the users' local F)")
    axes[1].set_title("downlink cost vs groups")
    fig.tight_layout()
    return fig


def cluster_table(summary: pd.DataFrame) -> str:
    """The markdown table of :func:`cluster_summary`."""
    lines = [
        "### accuracy and downlink cost vs groups C\n",
        f"mean ± std over seeds ({int(summary.seeds.max())} seed(s))\n",
        "| users | K | method | groups C | accuracy | downlink on air (MB) | "
        "training channel uses |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary.itertuples():
        lines.append(
            f"| {row.user_group} | {row.num_users} | {_cluster_label(row.method, row.grouping)} "
            f"| {row.groups} | {row.mean:.3f} ± {row.std:.3f} | {row.mb_down:.1f} "
            f"| {int(row.uses_down):,} |"
        )
    return "\n".join(lines) + "\n"


def tracking_frame(runs: Sequence[tuple[object, pd.DataFrame]]) -> pd.DataFrame:
    """The deployment slots of several runs in one frame, each row labelled with its run's
    channel (``channel``: e.g. ``TDL-A``), ``speed_kmh`` and refresh ``scheme`` (e.g.
    ``equalizer, every 1 ms, 256 pilots``), ``policy``, ``interval_ms`` and
    ``refresh_pilots``; ``runs``: (settings, tracking table) pairs."""
    frames = []
    for settings, tracking in runs:
        c, t = settings.communication, settings.tracking
        scheme = t.policy
        if t.policy != "none":
            scheme += f", every {1e3 * t.every * t.slot_duration:g} ms"
        if t.policy == "equalizer":
            scheme += f", {t.pilots or 'all'} pilots"
        if t.policy == "full":
            scheme += f", {t.rounds} rounds"
        frames.append(
            tracking.assign(
                channel=f"{c.model.upper()}-{c.profile}",
                speed_kmh=round(c.speed * 3.6, 1),
                scheme=scheme,
                policy=t.policy,
                interval_ms=1e3 * t.every * t.slot_duration if t.policy != "none" else math.nan,
                refresh_pilots=t.pilots if t.policy == "equalizer" and t.pilots else math.nan,
                slot_duration=t.slot_duration,
            )
        )
    return pd.concat(frames, ignore_index=True)


def tracking_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per channel, speed and scheme: the mean accuracy over slots and users, the worst
    slot's, and the refresh overhead per user and second (pilots, kB down and up)."""
    last = frame[frame.slot == frame.slot.max()]
    span = (
        (frame.slot.max() * frame.slot_duration)
        .groupby([frame.channel, frame.speed_kmh, frame.scheme])
        .first()
    )
    keys = ["channel", "speed_kmh", "scheme"]
    per_slot = frame.groupby([*keys, "slot"]).accuracy.mean()
    out = pd.DataFrame(
        {
            "accuracy": frame.groupby(keys).accuracy.mean(),
            "worst_slot": per_slot.groupby(keys).min(),
            "pilots_per_s": last.groupby(keys).overhead_pilots.mean() / span,
            "kb_down_per_s": last.groupby(keys).overhead_bytes_down.mean() / span / 1e3,
            "kb_up_per_s": last.groupby(keys).overhead_bytes_up.mean() / span / 1e3,
        }
    )
    return out.reset_index()


def tracking_table(summary: pd.DataFrame) -> str:
    """:func:`tracking_summary` as markdown, one row per channel, speed and scheme."""
    lines = [
        "### accuracy and refresh overhead per channel, speed and refresh scheme\n",
        "mean accuracy over the users and slots, the worst slot's mean, and the overhead of "
        "the refreshes per user and second of the deployment phase\n",
        "| channel | km/h | refresh | mean accuracy | worst slot | pilots/s per user "
        "| kB/s down per user | kB/s up per user |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.itertuples():
        lines.append(
            f"| {r.channel} | {r.speed_kmh:g} | {r.scheme} | {r.accuracy:.3f} | "
            f"{r.worst_slot:.3f} | {r.pilots_per_s:,.0f} | {r.kb_down_per_s:,.0f} | "
            f"{r.kb_up_per_s:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def figure_tracking(frame: pd.DataFrame, out: str | Path) -> Path:
    """Accuracy vs time per channel and speed, and vs overhead (see :func:`draw_tracking`)."""
    return _save(draw_tracking(frame), out)


def draw_tracking(frame: pd.DataFrame, pilots: int = 64):
    """Per channel (a row): one panel per speed with the users' mean accuracy in each slot
    against its time (ms), for no refresh, ``full`` and equalizer refreshes on ``pilots``
    pilots every 1 and 4 ms; the mean accuracy over the slots against the refresh interval
    (equalizer refreshes on ``pilots`` pilots, one line per speed); and against the
    refresh overhead (kB per user and second, down and up; every scheme)."""
    plt = _pyplot()
    channels, speeds = sorted(frame.channel.unique()), sorted(frame.speed_kmh.unique())
    schemes = sorted(frame.scheme.unique())
    palette = [c for c in plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2]]
    colours = dict(zip([s for s in schemes if s != "none"], palette, strict=False))
    colours["none"] = "black"  # the reference every panel has
    cols = len(speeds) + 2
    fig, axes = plt.subplots(
        len(channels), cols, figsize=(4.2 * cols, 3.6 * len(channels) + 0.8),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    summary = tracking_summary(frame)
    intervals = frame[(frame.policy == "equalizer") & (frame.refresh_pilots == pilots)]
    shown = {"none", *frame[frame.policy == "full"].scheme}
    shown |= set(intervals[intervals.interval_ms.isin([1.0, 4.0])].scheme)
    markers = dict(zip(speeds, ("o", "s", "^", "D"), strict=False))
    for i, channel in enumerate(channels):
        for j, speed in enumerate(speeds):
            ax = axes[i][j]
            part = frame[(frame.channel == channel) & (frame.speed_kmh == speed)]
            for scheme, runs in part[part.scheme.isin(shown)].groupby("scheme"):
                curve = runs.groupby("time_s").accuracy.mean()
                ax.plot(1e3 * curve.index, curve.values, label=scheme, color=colours[scheme])
            ax.set(
                title=f"{channel}, {speed:g} km/h", xlabel="time after training (ms)",
                ylabel=LABELS["accuracy"], ylim=(0, 1),
            )  # fmt: skip
            ax.grid(alpha=0.3)
        ax = axes[i][-2]
        for speed, part in summary[summary.channel == channel].groupby("speed_kmh"):
            own = intervals[(intervals.channel == channel) & (intervals.speed_kmh == speed)]
            curve = own.groupby("interval_ms").accuracy.mean()
            ax.plot(curve.index, curve.values, marker=markers[speed], label=f"{speed:g} km/h")
            none = part[part.scheme == "none"].accuracy
            if len(none):
                ax.axhline(none.iloc[0], linestyle=":", color=ax.lines[-1].get_color())
        ax.set(
            xscale="log", xlabel=f"refresh interval (ms; equalizer, {pilots} pilots)",
            ylabel="mean accuracy over the slots", ylim=(0, 1),
            title=f"{channel}: how often to refresh (dotted: never)",
        )  # fmt: skip
        ticks = sorted(intervals.interval_ms.unique())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[i][-1]
        for r in summary[summary.channel == channel].itertuples():
            cost = r.kb_down_per_s + r.kb_up_per_s
            ax.plot(
                max(cost, 1.0), r.accuracy, marker=markers[r.speed_kmh], linestyle="none",
                color=colours[r.scheme],
            )  # fmt: skip
        for speed, marker in markers.items():
            ax.plot([], [], marker=marker, linestyle="none", color="grey", label=f"{speed:g} km/h")
        ax.set(
            xscale="log", xlabel="refresh overhead per user (kB/s, down + up; none at 1)",
            ylabel="mean accuracy over the slots", title=f"{channel}: accuracy vs overhead",
            ylim=(0, 1),
        )  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    handles = [plt.Line2D([], [], color=colours[s]) for s in schemes]
    fig.legend(handles, schemes, fontsize=8, loc="outside lower center", ncol=5, frameon=False)
    return fig


def markdown_table(results: pd.DataFrame, metric: str, rows: list[str], columns: list[str]) -> str:
    """Mean ± std over seeds of ``metric``: one row per ``rows`` value, one column per setting."""
    summary = seed_summary(results, metric)
    summary["entry"] = [
        f"{m:.3f} ± {s:.3f}" for m, s in zip(summary["mean"], summary["std"], strict=True)
    ]
    table = summary.pivot_table(index=rows, columns=columns, values="entry", aggfunc="first")
    column_names = [
        " ".join(
            f"{HEADERS.get(n, n)} {_fmt(v)}"
            for n, v in zip(columns, c if isinstance(c, tuple) else (c,), strict=True)
        )
        for c in table.columns
    ]
    header = [HEADERS.get(r, r) for r in rows] + column_names
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, values in table.iterrows():
        keys = index if isinstance(index, tuple) else (index,)
        entries = [_fmt(k) for k in keys] + [v if isinstance(v, str) else "–" for v in values]
        lines.append("| " + " | ".join(entries) + " |")
    zoos = sorted({z for z in results.get("zoo", pd.Series(dtype=str)).dropna() if z})
    if zoos:  # which assets the numbers came from (each run's AP and users)
        lines.append(f"\nzoo fingerprints of these runs: {', '.join(zoos)}")
    return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="results.parquet files or folders holding them")
    parser.add_argument("--out", default="accuracy_vs_compression.png")
    parser.add_argument("--metric", default="accuracy", choices=["accuracy", "mse"])
    args = parser.parse_args()
    results = load_results(args.paths)
    print(seed_summary(results, args.metric).to_string(index=False))
    print(f"wrote {figure_compression(results, args.out, args.metric)}")


if __name__ == "__main__":
    main()
