"""Writing and printing results: parquet + csv tables, a per-user summary."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from common.files import atomic_file


def write_tables(out_dir: str | Path, tables: Mapping[str, pd.DataFrame]) -> list[Path]:
    """``results`` goes to parquet and csv, every other table to csv; each file atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in tables.items():
        if name == "results":
            with atomic_file(out / "results.parquet") as handle:
                frame.to_parquet(handle, index=False)
            written.append(out / "results.parquet")
        with atomic_file(out / f"{name}.csv") as handle:
            frame.to_csv(handle, index=False)
        written.append(out / f"{name}.csv")
    return written


def per_user_table(results: pd.DataFrame) -> str:
    """Accuracy, clean accuracy and MSE per user (and its group, for the clustered method),
    and their means; then the zoo's fingerprint, so that two readers see at once whether
    they compare the same zoo."""
    grouped = (results.method == "clustered").any() if "group" in results.columns else False
    cols = [
        "user",
        "user_model",
        *(["group"] if grouped else []),
        "accuracy",
        "clean_accuracy",
        "mse",
    ]
    table = results[cols].copy()
    measured = ["accuracy", "clean_accuracy", "mse"]
    blank = {"user": "mean", "user_model": "", **({"group": ""} if grouped else {})}
    mean = pd.DataFrame([{**blank, **results[measured].mean()}])
    table = pd.concat([table.astype({"user": str}), mean], ignore_index=True)
    text = table.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    zoo = zoo_fingerprint(results)
    return text + (f"\nzoo {zoo} (the fingerprint of the AP's and users' assets)" if zoo else "")


def slot_table(tracking: pd.DataFrame, shown: int = 12) -> str:
    """The deployment phase per slot (``tracking.csv``): its time (ms), the users' mean
    accuracy and MSE, how many users a refresh reached, and the refresh overhead per user
    so far, averaged over the users (pilots, kB = 1,000 bytes down and up); at most about
    ``shown`` slots, evenly spread, with the first, the worst and the last."""
    per_slot = tracking.groupby("slot").agg(
        time_ms=("time_s", lambda t: 1e3 * t.iloc[0]),
        accuracy=("accuracy", "mean"),
        mse=("mse", "mean"),
        refreshed=("refreshed", "sum"),
        pilots=("overhead_pilots", "mean"),
        kb_down=("overhead_bytes_down", lambda b: b.mean() / 1e3),
        kb_up=("overhead_bytes_up", lambda b: b.mean() / 1e3),
    )
    step = max(1, -(-len(per_slot) // shown))
    worst = per_slot.index.get_loc(per_slot.accuracy.idxmin())
    picked = per_slot.iloc[sorted({*range(0, len(per_slot), step), worst, len(per_slot) - 1})]
    formats = {
        "time_ms": "{:.3f}".format,
        "accuracy": "{:.4f}".format,
        "mse": "{:.4f}".format,
        "pilots": "{:,.0f}".format,
        "kb_down": "{:,.1f}".format,
        "kb_up": "{:,.1f}".format,
    }
    text = picked.reset_index().to_string(index=False, formatters=formats)
    which = "every slot" if step == 1 else f"every {step}th slot, the worst and the last"
    return (
        f"deployment: {len(per_slot)} slots, mean accuracy {per_slot.accuracy.mean():.4f} "
        f"(worst: slot {per_slot.accuracy.idxmin()}, {per_slot.accuracy.min():.4f}); "
        f"{which}, with the users refreshed and the refresh overhead so far, mean per user "
        f"(kB = 1,000 bytes):\n{text}"
    )


def zoo_fingerprint(results: pd.DataFrame) -> str:
    """The zoo a run's results came from (``''`` for results written before it was kept)."""
    if "zoo" not in results.columns or not len(results):
        return ""
    return str(results.zoo.iloc[0] or "")


def headline(results: pd.DataFrame) -> str:
    """One line: the run's settings, its mean accuracy, and its zoo's fingerprint."""
    row = results.iloc[0]
    zoo = zoo_fingerprint(results)
    return (
        f"method={row.method} dataset={row.dataset} users={len(results)} "
        f"u={row.channel_usage} {row.antennas_tx}x{row.antennas_rx} snr={row.snr_db:g} dB "
        f"zeta={row.compression_factor:.2f}% seed={row.seed}: "
        f"mean accuracy {results.accuracy.mean():.4f} (clean {results.clean_accuracy.mean():.4f})"
        + (f" zoo={zoo}" if zoo else "")
    )


def show_progress(enabled: bool) -> None:
    """Round lines and run summaries (the project's INFO logs) on stdout, or only warnings.

    Called by every process that runs an AP (the ServerApp, the simulation), so
    the per-round lines appear under ``run_simulation.py`` and ``flwr run`` alike.
    """
    logging.getLogger("flwr").setLevel(logging.WARNING)  # FLWR_LOG_LEVEL is read at import
    for name in ("common", "server", "clients", "launch"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO if enabled else logging.WARNING)
        if not any(getattr(h, "fedalign", False) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler.fedalign = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
            logger.propagate = False


def failed_users(
    results: pd.DataFrame, failures: pd.DataFrame, users: int, rounds: int, max_fraction: float
) -> dict[int, str]:
    """Users that failed permanently, each with why: never evaluated, or failed in more than
    ``max_fraction`` of the training rounds."""
    account: dict[int, str] = {}
    evaluated = set(results.user) if len(results) else set()
    for user in range(users):
        own = failures[failures.user == user] if len(failures) else failures
        last = f" (last: {own.reason.iloc[-1]})" if len(own) else ""
        train = own[own.stage == "train"] if len(own) else own
        if user not in evaluated:
            account[user] = f"never evaluated{last}"
        elif len(train) > max_fraction * rounds:
            account[user] = f"failed {len(train)} of {rounds} training rounds{last}"
    return account
