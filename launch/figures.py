"""Every figure of the paper in one command: run (or read) the study's points, then draw.

    python -m launch.figures                      # the paper's grids (six seeds), through Flower
    python -m launch.figures --quick              # a small version of every grid
    python -m launch.figures --seeds 27 42 --in-process --only compression snr
    python -m launch.figures --in-process --only users --user-counts 8 32 128
    python -m launch.figures --in-process --only clusters
    python -m launch.figures --in-process --only tracking

Each point is looked up in the point store first (``--store``, default
``outputs/points``, shared with ``run_simulation.py -m``); only missing points
are run, through Flower sweeps (one simulation for all of them) or, with
``--in-process``, by the in-process driver, which gives the same numbers.
Figures (PNG) and one markdown table per figure go to ``--out``
(``docs/figures``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import pandas as pd

from common.run import plots
from common.run.points import PointStore
from common.run.settings import RunSettings
from common.run.study import (
    StudyGrid,
    channel_points,
    cluster_points,
    compression_points,
    fault_points,
    group_points,
    participation_points,
    snr_points,
    tracking_points,
    user_points,
)

# Studies run only when named (--only): the many-users study runs up to a thousand users,
# the groups-of-users study 256, the moving-channels study 30 deployment phases.
BEYOND_DEFAULT = ("users", "clusters", "tracking")


def _study(base: RunSettings, grid: StudyGrid, models: dict) -> dict[str, list[RunSettings]]:
    return {
        "compression": compression_points(base, grid),
        "snr": snr_points(base, grid),
        "groups": group_points(base, grid, models),
        "faults": fault_points(base, grid),
        "participation": participation_points(base, grid),
        "channels": channel_points(base, grid),
        "users": user_points(base, grid),
        "clusters": cluster_points(base, grid),
        "tracking": tracking_points(base, grid),
    }


def _draw(name: str, results: pd.DataFrame, out: Path) -> list[Path]:
    """The figure(s) and markdown table of one study (each table: title, metric, row and
    column keys, and the rows of ``results`` it summarises)."""
    if name == "compression":
        written = [
            plots.figure_compression(results, out / "accuracy_vs_zeta.png"),
            plots.figure_compression(results, out / "mse_vs_zeta.png", metric="mse"),
        ]
        rows = ["antennas_tx", "method"]
        tables = [
            ("accuracy vs effective ζ", "accuracy", rows, [plots.ZETA], results),
            ("MSE vs effective ζ", "mse", rows, [plots.ZETA], results),
        ]
    elif name == "snr":
        written = [plots.figure_snr(results, out / "accuracy_vs_snr.png")]
        tables = [
            ("accuracy vs SNR (dB)", "accuracy", ["method", "channel_usage"], ["snr_db"], results)
        ]
    elif name == "faults":
        written = [plots.figure_faults(results, out / "accuracy_vs_faulty_users.png")]
        tables = [
            ("accuracy vs faulty users", "accuracy", ["aggregator"], ["faulty_users"], results)
        ]
    elif name == "participation":
        written = [plots.figure_participation(results, out / "accuracy_vs_participation.png")]
        tables = [
            ("accuracy vs participation", "accuracy", ["channel_usage"], ["participation"], results)
        ]
    elif name == "users":
        full = results[results.participation == 1.0]
        many = results[results.method == "federated"]
        many = many[many.num_users == many.num_users.max()]
        # the group and channel uses the participation points were run at (the full
        # participation point of the other groups and uses is not one of them)
        partial = many[many.participation < 1]
        studied = set(zip(partial.user_group, partial.channel_usage, strict=True))
        keys = zip(many.user_group, many.channel_usage, strict=True)
        many = many[[key in studied for key in keys]]
        written = [
            plots.figure_users(results, out / "accuracy_vs_users.png"),
            plots.figure_users(results, out / "mse_vs_users.png", metric="mse"),
            plots.figure_users_participation(many, out / "accuracy_vs_participation_users.png"),
        ]
        rows = ["user_group", "method", "channel_usage"]
        tables = [
            ("accuracy vs users K", "accuracy", rows, ["num_users"], full),
            ("MSE vs users K", "mse", rows, ["num_users"], full),
            (
                "accuracy vs participation, many users",
                "accuracy",
                ["num_users", "user_group", "channel_usage"],
                ["participation"],
                many,
            ),
        ]
    elif name == "clusters":
        written = [plots.figure_clusters(results, out / "accuracy_vs_clusters.png")]
        table = out / f"{name}.md"
        table.write_text(plots.cluster_table(plots.cluster_summary(results)))
        return [*written, table]
    elif name == "channels":
        written = [plots.figure_channels(results, out / "accuracy_vs_channel.png")]
        model, csi = results.channel_model, results.csi
        static = results[(model == "rayleigh") & (csi == "perfect")]
        tables = [
            (
                "accuracy vs antenna correlation",
                "accuracy",
                ["method"],
                ["correlation"],
                results[model == "correlated"],
            ),
            (
                "accuracy vs Rician K",
                "accuracy",
                ["method"],
                ["k_factor"],
                results[model == "rician"],
            ),
            (
                "accuracy vs CSI estimation SNR (dB), federated",
                "accuracy",
                ["csi"],
                ["csi_snr_db"],
                results[(model == "rayleigh") & (csi != "perfect")],
            ),
            ("accuracy vs channel ageing", "accuracy", ["method"], ["ageing"], static),
        ]
    else:
        written = [plots.figure_groups(results, out / "groups_vs_zeta.png")]
        tables = [
            (
                f"network {m} vs effective ζ",
                m,
                ["pilot_fraction", "user_group"],
                [plots.ZETA],
                results,
            )
            for m in ("accuracy", "mse")
        ]
    text = "".join(
        f"### {title}\n\nmean ± std over seeds ({results.seed.nunique()} seeds)\n\n"
        + plots.markdown_table(part, metric, rows, cols)
        + "\n"
        for title, metric, rows, cols, part in tables
    )
    table = out / f"{name}.md"
    table.write_text(text)
    return [*written, table]


def _draw_tracking(frame: pd.DataFrame, out: Path) -> list[Path]:
    """The moving-channels figure and its table (tracking.md)."""
    written = [plots.figure_tracking(frame, out / "accuracy_vs_time.png")]
    table = out / "tracking.md"
    table.write_text(plots.tracking_table(plots.tracking_summary(frame)))
    return [*written, table]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small version of every grid")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the paper's six)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[
            "compression",
            "snr",
            "groups",
            "faults",
            "participation",
            "channels",
            "users",
            "clusters",
            "tracking",
        ],
    )
    parser.add_argument("--in-process", action="store_true", help="skip Flower (same numbers)")
    parser.add_argument("--store", default="outputs/points", help="the point store")
    parser.add_argument(
        "--in-flight", type=int, default=None, help="points sharing each Flower round (default: 8)"
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="processes for --in-process (default: one per core)"
    )
    parser.add_argument(
        "--user-counts",
        type=int,
        nargs="+",
        help="the numbers of users K of the users study (default: 8 32 128 512 1000)",
    )
    parser.add_argument(
        "--cluster-users",
        type=int,
        nargs="+",
        help="the numbers of users K of the clusters study (default: 64 256)",
    )
    parser.add_argument("--out", default="docs/figures", help="where figures and tables go")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the base run")
    args = parser.parse_args(argv)
    for name in ("in_flight", "jobs"):
        if (value := getattr(args, name)) is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("user_counts", "cluster_users"):
        if bad := [k for k in getattr(args, name) or () if k < 1]:
            parser.error(f"--{name.replace('_', '-')} must be at least 1 each, got {bad[0]}")

    from common.assets.devices import DeviceError, check_device
    from common.run.settings import ConfigError
    from common.run.trackers import check_tracker
    from conf import settings

    try:
        base = settings("experiment.progress=false", *args.overrides)
        check_tracker(base)  # before any point is computed
        check_device(base.device, base.latents.precision)
        # the overrides' zoo (users=paper10, users.zoo=paper), each study group of it
        models = {
            g: settings(
                *args.overrides, f"users.group={g}", "users.count=null", "users.models=null"
            ).users.models
            for g in ("heterogeneous", "homogeneous")
        }
    except (ConfigError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    grid = (
        StudyGrid.quick(tuple(args.seeds or (42,)))
        if args.quick
        else StudyGrid(**({"seeds": tuple(args.seeds)} if args.seeds else {}))
    )
    if args.user_counts:
        grid = dataclasses.replace(grid, user_counts=tuple(sorted(set(args.user_counts))))
    if args.cluster_users:
        grid = dataclasses.replace(grid, cluster_users=tuple(sorted(set(args.cluster_users))))
    study = _study(base, grid, models)
    names = args.only or [n for n in study if n not in BEYOND_DEFAULT]
    store, out = PointStore(args.store), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    from launch.simulation import SimulationFailed
    from launch.sweeps import interrupted, run_unfinished

    points = [c for n in names for c in study[n]]
    try:
        run_unfinished(
            store, points, in_process=args.in_process, in_flight=args.in_flight, jobs=args.jobs
        )
    except SimulationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return interrupted(store, points)
    for name in names:
        if name == "tracking":  # drawn from the deployment slots, not the results
            frame = plots.tracking_frame([(c, store.load(c).tracking) for c in study[name]])
            for path in _draw_tracking(frame, out):
                print(f"wrote {path}")
            continue
        results = pd.concat([store.load(c).results for c in study[name]], ignore_index=True)
        for path in _draw(name, results, out):
            print(f"wrote {path}")
    print(f"study done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
