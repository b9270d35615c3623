"""The ServerApp: the access point of one run, driven by :class:`AlignmentStrategy`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.access_point import access_point_class
from common.driver import run_info
from common.reporting import headline, write_tables
from common.settings import RunSettings
from common.sources import ProblemSource
from server import wire
from server.strategy import AlignmentStrategy


@dataclass
class RunOutcome:
    results: pd.DataFrame
    history: pd.DataFrame
    failures: pd.DataFrame
    precoders: dict[str, np.ndarray]
    wall_time_s: float

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"results": self.results, "history": self.history, "failures": self.failures}


def run_access_point(
    grid: Grid,
    settings: RunSettings,
    source: ProblemSource,
    *,
    node_wait_timeout: float = 300.0,
    round_timeout: float = 3600.0,
) -> RunOutcome:
    """Build the AP from its own inputs only and run every round over ``grid``."""
    start = time.perf_counter()
    if source.num_users != settings.num_users:
        raise ValueError(
            f"the source provides {source.num_users} users but the settings name "
            f"{settings.num_users} ({', '.join(settings.models)})"
        )
    config = settings.experiment()
    inputs = source.ap_inputs()
    ap = access_point_class(config.method)(
        inputs.pilots,
        inputs.test,
        config.link,
        list(range(settings.num_users)),
        rounds=config.rounds,
        rho=config.rho,
        seed=config.seed,
    )
    info = run_info(config, inputs.dataset, inputs.model, list(settings.models), ap)
    strategy = AlignmentStrategy(
        ap, info, node_wait_timeout=node_wait_timeout, progress=settings.progress
    )
    strategy.start(
        grid=grid,
        initial_arrays=wire.array_record(ap.precoders()),
        num_rounds=ap.num_rounds,
        timeout=round_timeout,
    )
    wall = time.perf_counter() - start
    return RunOutcome(
        results=strategy.results_frame(wall),
        history=strategy.history_frame(),
        failures=strategy.failures_frame(),
        precoders=ap.precoders(),
        wall_time_s=wall,
    )


def make_server_app(
    settings: RunSettings | None = None,
    source: ProblemSource | None = None,
    sink: dict | None = None,
) -> ServerApp:
    """A ServerApp bound to ``settings``/``source`` (simulation), or reading the run config.

    Under ``run_simulation`` the app runs in the caller's process and hands its
    :class:`RunOutcome` back through ``sink``; under ``flwr run`` it writes the
    tables to the run config's ``output-dir``.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        resolved = settings
        if resolved is None:
            from server.runconfig import settings_from_run_config

            resolved = settings_from_run_config(context.run_config)
        src = source
        if src is None:
            from common.asset_source import AssetSource

            src = AssetSource(resolved)
        outcome = run_access_point(grid, resolved, src)
        if sink is not None:
            sink["outcome"] = outcome
        out_dir = str(context.run_config.get("output-dir", ""))
        if out_dir:
            for path in write_tables(Path(out_dir), outcome.tables()):
                print(f"wrote {path}")
            print(headline(outcome.results))

    return app


# `flwr run .` entry point ([tool.flwr.app.components] serverapp).
app = make_server_app()
