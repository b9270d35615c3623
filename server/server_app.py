"""The ServerApp: the access point of a run, or of every point of a sweep.

``app`` below is the module-level ServerApp that ``flwr run .`` loads: its run
config names the run in Hydra's override syntax (``overrides``; a sweep when
it sweeps, e.g. ``seed=1,2``), the folder its tables go to (``output-dir``) and
how many points share each round (``points-in-flight``). :func:`make_server_app`
makes one bound to its points and sink, for a simulation. Either way the AP is
built from its own inputs only (its encoder's latents; never a user's), and
:mod:`server.sweep` runs the points over the grid.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.run.reporting import show_progress
from common.run.sources import ProblemSource
from server.pacing import simulated
from server.sweep import POINTS_IN_FLIGHT, Sink, WriteTo, run_point, run_points

logger = logging.getLogger(__name__)

# How often Flower's grid looks for replies (its own default, 0.1 s, adds up to a
# tenth of a second to every round).
PULL_INTERVAL_S = 0.01
# The run config's key for the points sharing a round, and the one earlier versions read.
IN_FLIGHT_KEY, OLD_IN_FLIGHT_KEY = "points-in-flight", "cells-in-flight"


def points_in_flight(run_config: dict) -> int:
    """The run config's ``points-in-flight``. ``cells-in-flight``, its earlier name, is still
    read when set (not 0), with a deprecation warning.

    Raises
    ------
    ValueError
        The value is not a whole number >= 1.
    """
    key = IN_FLIGHT_KEY
    if run_config.get(OLD_IN_FLIGHT_KEY, 0):
        if run_config.get(IN_FLIGHT_KEY, POINTS_IN_FLIGHT) not in (
            POINTS_IN_FLIGHT,
            run_config[OLD_IN_FLIGHT_KEY],
        ):
            raise ValueError(
                f"run config keys {IN_FLIGHT_KEY!r} and {OLD_IN_FLIGHT_KEY!r} (its deprecated "
                f"name) disagree: set only {IN_FLIGHT_KEY!r}"
            )
        message = f"the run config key {OLD_IN_FLIGHT_KEY!r} is deprecated: use {IN_FLIGHT_KEY!r}"
        logger.warning("%s", message)
        warnings.warn(message, FutureWarning, stacklevel=2)
        key = OLD_IN_FLIGHT_KEY
    value = run_config.get(key, POINTS_IN_FLIGHT)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"run config key {key!r} must be a whole number >= 1, got {value!r}")
    return value


def run_from_config(grid: Grid, context: Context, source: ProblemSource | None) -> None:
    """``flwr run``: one run, or a sweep, from the run config.

    One run writes its tables to ``output-dir``; a sweep keeps each point in
    ``output-dir/points/<key>`` (finished points are skipped when the same sweep runs
    again) and lists the points in ``output-dir/points.csv``.
    """
    from common.run.points import PointStore
    from common.run.trackers import check_tracker, close_sweep, name_runs, run_label
    from conf import split_overrides, sweep_points

    run_config = dict(context.run_config)
    folder = Path(
        str(run_config.get("output-dir") or "") or Path("outputs/flwr") / str(context.run_id)
    )
    overrides = str(run_config.get("overrides", ""))
    points = sweep_points(overrides)
    show_progress(any(settings.experiment.progress for _, settings in points))
    check_tracker(points[0][1])
    if len(points) == 1:
        named, _ = name_runs([(split_overrides(overrides), points[0][1])], "")
        run_point(grid, named[0], WriteTo(folder), source)
        return
    in_flight = points_in_flight(run_config)
    store = PointStore(folder / "points")
    index = pd.DataFrame([{"point": store.path(s).name, "overrides": text} for text, s in points])
    folder.mkdir(parents=True, exist_ok=True)
    index.to_csv(folder / "points.csv", index=False)
    todo = [(text, s) for text, s in points if not store.finished(s)]
    logger.info(
        "sweep: %d points, %d already finished in %s",
        len(points),
        len(points) - len(todo),
        store.root,
    )
    named, parent = name_runs(
        [(split_overrides(text), s) for text, s in todo],
        f"sweep: {run_label(split_overrides(overrides))}",
        sweep=[s for _, s in points],
    )
    try:
        run_points(grid, named, store, source, in_flight=in_flight)
    except BaseException:
        close_sweep(points[0][1], parent, failed=True)
        raise
    close_sweep(points[0][1], parent, failed=False)


def make_server_app(
    points: Sequence | None = None,
    sink: Sink | None = None,
    source: ProblemSource | None = None,
    *,
    in_flight: int = POINTS_IN_FLIGHT,
) -> ServerApp:
    """A ServerApp bound to its points and sink (a simulation), or reading its runs from
    the run config like ``app`` (when ``points`` is None)."""
    bound = ServerApp()

    @bound.main()
    def main(grid: Grid, context: Context) -> None:
        _fast_polling(grid)
        if points is None:
            run_from_config(grid, context, source)
        elif len(points) == 1 and not getattr(sink, "resumes", False):  # a single run
            run_point(grid, points[0], sink or WriteTo("outputs/flwr"), source)
        else:
            run_points(grid, points, sink or WriteTo("outputs/flwr"), source, in_flight=in_flight)

    return bound


def _fast_polling(grid: Grid) -> None:
    if simulated(grid):
        grid.pull_interval = PULL_INTERVAL_S


# `flwr run .` entry point ([tool.flwr.app.components] serverapp).
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """The run (or sweep) the run config names, with one BLAS thread, as the AP of
    ``run_simulation.py`` computes (:func:`launch.environment.single_threaded`): the same
    sums in the same order, so the same numbers to the last bit."""
    from threadpoolctl import threadpool_limits

    _fast_polling(grid)
    with threadpool_limits(1):
        run_from_config(grid, context, None)
