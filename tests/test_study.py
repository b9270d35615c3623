"""The study's grids and figures, drawn from small results tables."""

import pandas as pd
import pytest

from common.run import plots
from common.run.driver import run_experiment
from common.run.study import (
    PAPER_SEEDS,
    StudyGrid,
    channel_points,
    compression_points,
    fault_points,
    group_points,
    participation_points,
    snr_points,
    user_points,
)
from conf import settings
from tests.synthetic import make_problem, settings_for

PROBLEM = make_problem(n=200, n_test=80, ap_dim=16, user_dims=(12, 9))
BASE = settings_for(PROBLEM, rounds=3)
# the fault study compares trimming rules: trimmed_mean (β = 0.2) needs five users to cut one
FIVE = make_problem(n=200, n_test=80, ap_dim=16, user_dims=(12, 9, 10, 11, 13))
FIVE_BASE = settings_for(FIVE, rounds=3)


def test_the_paper_grids_have_the_papers_sizes():
    base, grid = settings(), StudyGrid()
    models = {"heterogeneous": ("a",), "homogeneous": ("b",)}
    compression = compression_points(base, grid)
    assert len(compression) == 3 * 6 * (4 * 7 + 6)  # pairs x seeds x (4 methods x 7 u + Top-K)
    top_k = {c.link.channel_uses for c in compression if c.strategy.name == "top_k"}
    assert top_k == {1, 2, 3, 4, 5, 10}
    assert {(c.link.antennas_tx, c.link.antennas_rx) for c in compression} == {
        (1, 1),
        (2, 2),
        (4, 4),
    }
    snr = snr_points(base, grid)
    assert len(snr) == 6 * 5 * (3 + 3 + 2) and {c.link.antennas_tx for c in snr} == {4}
    groups = group_points(base, grid, models)
    assert len(groups) == 2 * 3 * 7 * 6 and {c.strategy.name for c in groups} == {"federated"}
    assert {c.seed for c in [*compression, *snr, *groups]} == set(PAPER_SEEDS)
    faults = fault_points(base, grid)
    assert len(faults) == 4 * 4 * 6 and {c.faults.kind for c in faults} == {"random"}
    assert {(c.consensus.aggregator, c.faults.users) for c in faults if c.seed == 27} == {
        (a, f) for a in ("mean", "weighted_mean", "median", "trimmed_mean") for f in range(4)
    }
    participation = participation_points(base, grid)
    assert {c.consensus.participation for c in participation} == {0.25, 0.5, 0.75, 1.0}
    users = user_points(base, grid)  # 2 groups x 4 methods x 2 u x 5 K, + participation
    assert len(users) == 2 * 4 * 2 * 5 + 4 - 1
    assert {c.num_users for c in users} == {8, 32, 128, 512, 1000}
    partial = [c for c in users if c.consensus.participation < 1]
    assert {(c.num_users, c.strategy.name, c.users.group) for c in partial} == {
        (1000, "federated", "heterogeneous")
    }
    assert all(len(set(c.users.models)) == 4 for c in users)  # each group's 4 models


@pytest.fixture(scope="module")
def results():
    """A small study on synthetic latents: two seeds, two pairs, every method."""
    grid = StudyGrid.quick(seeds=(1, 2))
    models = {"heterogeneous": BASE.users.models, "homogeneous": BASE.users.models}
    studies = {
        "compression": compression_points(BASE, grid),
        "snr": snr_points(BASE, grid),
        "groups": group_points(BASE, grid, models),
        "faults": fault_points(FIVE_BASE, grid),
        "participation": participation_points(BASE, grid),
        "channels": channel_points(BASE, grid),
    }
    return {
        name: pd.concat(
            [run_experiment(FIVE if name == "faults" else PROBLEM, c).results for c in points],
            ignore_index=True,
        )
        for name, points in studies.items()
    }


def _lines(ax) -> dict[str, tuple]:
    return {line.get_label(): tuple(line.get_xdata()) for line in ax.get_lines()}


def test_the_compression_figure_has_a_panel_per_pair_and_a_line_per_method(results):
    table = results["compression"]
    fig = plots.draw_compression(table)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["2×2 antennas (Nt×Nr)", "4×4 antennas (Nt×Nr)"]
    lines = _lines(axes[1])
    assert set(lines) == {
        "federated (shared F)",
        "multi-link (F per user)",
        "First-K",
        "Top-K",
        "Eigen-K",
    }
    m_ap = 8  # 16 real features -> 8 complex symbols
    assert lines["federated (shared F)"] == pytest.approx((100 / m_ap, 400 / m_ap))
    assert lines["Top-K"] == pytest.approx((200 / m_ap, 800 / m_ap))  # indices double it
    assert "effective compression factor" in axes[0].get_xlabel()
    assert axes[0].get_ylabel().startswith("accuracy")
    assert plots.draw_compression(table, "mse").axes[0].get_ylabel().startswith("MSE")


def test_the_snr_and_group_figures_draw_what_they_name(results):
    ax = plots.draw_snr(results["snr"]).axes[0]
    assert ax.get_xlabel() == "SNR (dB)"
    labels = set(_lines(ax))
    assert "federated (shared F), u=4 (effective ζ=50.0%)" in labels
    assert "Top-K, u=2 (effective ζ=50.0%)" in labels
    fig = plots.draw_groups(results["groups"])
    assert len(fig.axes) == 4  # accuracy and MSE rows x two pilot fractions
    assert fig.axes[0].get_title() == "semantic pilots: 100% of the training split"
    assert set(_lines(fig.axes[0])) == {"heterogeneous users", "homogeneous users"}
    assert fig.axes[2].get_ylabel() == "network MSE per latent entry"


def test_the_fault_and_participation_figures_draw_what_they_name(results):
    ax = plots.draw_faults(results["faults"]).axes[0]
    lines = _lines(ax)
    assert set(lines) == {"mean", "weighted_mean", "median", "trimmed_mean"}
    assert lines["median"] == (0, 2)
    assert ax.get_xlabel().startswith("faulty users (of 5;")
    ax = plots.draw_participation(results["participation"]).axes[0]
    assert set(_lines(ax)) == {"u = 1 (ζ = 12.5 %)", "u = 4 (ζ = 50.0 %)"}
    assert _lines(ax)["u = 4 (ζ = 50.0 %)"] == (0.5, 1.0)


def test_the_channel_figure_has_a_panel_per_question(results):
    table = results["channels"]
    assert (
        len(
            table.groupby(
                [
                    "method",
                    "channel_model",
                    "correlation",
                    "k_factor",
                    "csi",
                    "csi_snr_db",
                    "ageing",
                    "seed",
                ]
            )
        )
        == 32
    )
    fig = plots.draw_channels(table)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "spatially correlated MIMO",
        "Rician MIMO",
        "imperfect CSI (federated)",
        "channel ageing (Gauss–Markov)",
    ]
    corr, rician, csi, ageing = (_lines(ax) for ax in fig.axes)
    assert set(corr) == set(rician) == set(ageing) == {"federated (shared F)", "First-K"}
    assert corr["First-K"] == (0.0, 0.9) and ageing["First-K"] == (0.7, 1.0)
    assert set(csi) == {"LS estimate", "LMMSE estimate", "perfect CSI"}
    assert csi["LS estimate"] == (0.0, 20.0)


def test_summary_tables_are_markdown_with_mean_and_spread(results):
    compression = results["compression"]
    table = plots.markdown_table(
        compression[compression.antennas_tx == 4], "accuracy", ["method"], [plots.ZETA]
    )
    lines = table.strip().splitlines()
    assert lines[0].startswith("| method | ζ eff. (%) ")
    assert set(lines[1]) <= {"|", "-"}
    federated = next(line for line in lines if line.startswith("| federated "))
    assert "±" in federated


@pytest.mark.slow
def test_figures_in_process_over_two_processes_write_every_file_and_resume(
    tmp_path, embedded_source, cache_dir, capsys
):
    """``launch.figures --in-process --jobs 2``: the points, the figure and its table; run
    again, nothing is recomputed; a point's numbers are those of the driver run directly."""
    from common.run.points import PointStore
    from launch import figures

    store, out = tmp_path / "points", tmp_path / "figures"
    argv = [
        "--quick",
        "--only",
        "snr",
        "--in-process",
        "--jobs",
        "2",
        "--store",
        str(store),
        "--out",
        str(out),
        f"cache_dir={cache_dir}",
    ]
    assert figures.main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"accuracy_vs_snr.png", "snr.md"}
    assert len([p for p in store.iterdir() if not p.name.startswith(".")]) == 6
    assert figures.main(argv) == 0
    assert "6 points, 6 already finished" in capsys.readouterr().out
    point = settings(
        f"cache_dir={cache_dir}",
        "experiment.progress=false",
        "strategy=top_k",
        "communication.channel_usage=2",
        "communication.snr=-10",
    )
    alone = run_experiment(embedded_source.problem(), point)
    kept = PointStore(store).load(point)
    assert kept.results.accuracy.tolist() == alone.results.accuracy.tolist()
    with pytest.raises(SystemExit):  # argparse refuses it, naming the option
        figures.main([*argv, "--jobs", "0"])
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        figures.main([*argv, "--user-counts", "8", "0"])
    assert "--user-counts must be at least 1 each, got 0" in capsys.readouterr().err


def test_the_users_figure_draws_each_method_against_the_number_of_users():
    frames = []
    for dims in ((12, 9), (12, 9, 12, 9)):
        problem = make_problem(n=200, n_test=80, ap_dim=16, user_dims=dims)
        for method in ("federated", "first_k"):
            run = settings_for(problem, rounds=2, **{"strategy.name": method})
            frames.append(run_experiment(problem, run).results)
    results = pd.concat(frames, ignore_index=True)
    assert sorted(results.num_users.unique()) == [2, 4]
    for metric in ("accuracy", "mse"):
        ax = plots.draw_users(results, metric).axes[0]
        lines = _lines(ax)
        assert set(lines) == {"federated (shared F), u = 4", "First-K, u = 4"}
        assert lines["First-K, u = 4"] == (2, 4) and ax.get_xscale() == "log"
    table = plots.markdown_table(results, "accuracy", ["method"], ["num_users"])
    assert table.splitlines()[0] == "| method | K 2 | K 4 |"


def test_the_users_participation_table_holds_only_the_studied_group_and_channel_uses(tmp_path):
    """At the largest K, the full-participation points of other channel uses are in the
    users-vs-K figure, not in the participation one."""
    from launch import figures

    problem = make_problem(n=200, n_test=80, ap_dim=16, user_dims=(12, 9, 12, 9))
    frames = {}
    for uses, share in ((4, 0.5), (4, 1.0), (2, 1.0)):
        run = settings_for(problem, rounds=2, channel_uses=uses, participation=share)
        frames[uses, share] = run_experiment(problem, run).results
    results = pd.concat(frames.values(), ignore_index=True)
    figures._draw("users", results, tmp_path)
    text = (tmp_path / "users.md").read_text().split("### accuracy vs participation")[1]
    rows = [line for line in text.splitlines() if line.startswith("| 4 |")]
    assert len(rows) == 1 and "| 4 | " in rows[0]  # K = 4, one group, u = 4 only
    full = frames[4, 1.0].accuracy.mean()
    assert rows[0].rstrip(" |").endswith(f"{full:.3f} ± 0.000")


def test_the_tracking_grid_and_figure_draw_what_they_name(tmp_path):
    """66 points (2 channels x 3 speeds x 11 refresh schemes, 80 slots of 0.25 ms); the
    figure has the three speeds' time panels, the refresh-interval and overhead panels per
    channel, and the table one row per (channel, speed, scheme) with its overhead."""
    from common.run.study import tracking_points
    from launch import figures
    from tests.test_tracking import PROBLEM, _settings

    points = tracking_points(settings(), StudyGrid())
    assert len(points) == 66 and {p.seed for p in points} == {42}
    assert {round(p.communication.speed * 3.6) for p in points} == {3, 30, 120}
    assert {(p.tracking.slots, p.tracking.slot_duration) for p in points} == {(80, 0.25e-3)}
    runs = []
    for speed in (0.0, 8.3):
        for policy, options in (
            ("none", {}),
            ("equalizer", {"tracking.every": 2, "tracking.pilots": 64}),
            ("equalizer", {"tracking.every": 4, "tracking.pilots": 64}),
            ("full", {"tracking.every": 3, "tracking.rounds": 2}),
        ):
            run = _settings(policy, speed=speed, **options)
            runs.append((run, run_experiment(PROBLEM, run).tracking))
    frame = plots.tracking_frame(runs)
    summary = plots.tracking_summary(frame)
    assert len(summary) == 2 * 4
    own = summary[(summary.speed_kmh == 29.9) & (summary.scheme == "full, every 6 ms, 2 rounds")]
    last = runs[7][1][runs[7][1].slot == 6]
    span = 6 * 2e-3  # s: 6 slots of 2 ms
    assert own.pilots_per_s.item() == pytest.approx(last.overhead_pilots.mean() / span)
    assert own.kb_up_per_s.item() == pytest.approx(last.overhead_bytes_up.mean() / span / 1e3)
    written = figures._draw_tracking(frame, tmp_path)
    assert {p.name for p in written} == {"accuracy_vs_time.png", "tracking.md"}
    table = (tmp_path / "tracking.md").read_text()
    assert "| TDL-A | 29.9 | equalizer, every 4 ms, 64 pilots |" in table
    fig = plots.draw_tracking(frame)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == [
        "TDL-A, 0 km/h",
        "TDL-A, 29.9 km/h",
        "TDL-A: how often to refresh (dotted: never)",
    ]
    intervals = fig.axes[2].get_lines()[0].get_xdata()  # equalizer on 64 pilots
    assert list(intervals) == [4.0, 8.0]
