"""The ServerApp: the access point of one run, driven by :class:`AlignmentStrategy`.

It builds the AP from its own inputs only (its encoder's latents; never a
user's), runs every round over the grid, and writes the run's outcome (tables
and learned precoders) to its output folder: the run config's ``output-dir``
under ``flwr run``, or the folder the simulation helper names.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from common.run.reporting import headline, show_progress
from common.run.results import RunOutcome
from common.run.session import Session, build_access_point
from common.run.settings import RunSettings
from common.run.sources import ProblemSource
from server.strategy import AlignmentStrategy

logger = logging.getLogger(__name__)


def run_access_point(
    grid: Grid,
    settings: RunSettings,
    source: ProblemSource,
    *,
    node_wait_timeout: float = 300.0,
    round_timeout: float = 3600.0,
) -> RunOutcome:
    """Build the AP and its session, run every round over ``grid``, return the outcome."""
    if source.num_users != settings.num_users:
        raise ValueError(
            f"the source provides {source.num_users} users but the settings name "
            f"{settings.num_users} ({', '.join(settings.models)})"
        )
    inputs = source.ap_inputs()
    ap = build_access_point(settings, inputs, list(range(settings.num_users)))
    session = Session(ap, settings, inputs)
    strategy = AlignmentStrategy(session, node_wait_timeout=node_wait_timeout)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({k: Array(v) for k, v in ap.precoders().items()}),
        num_rounds=ap.num_rounds,
        timeout=round_timeout,
    )
    return session.outcome(precoders={k: a.numpy() for k, a in result.arrays.items()})


def make_server_app(
    settings: RunSettings | None = None,
    source: ProblemSource | None = None,
    out_dir: str | Path | None = None,
) -> ServerApp:
    """A ServerApp bound to ``settings``/``source``/``out_dir`` (simulation), or reading them
    from the run config (``flwr run``: ``overrides`` and ``output-dir``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        resolved = settings
        if resolved is None:
            from conf import settings_from_run_config

            resolved = settings_from_run_config(context.run_config)
            show_progress(resolved.progress)
        src = source
        if src is None:
            from common.assets.source import AssetSource

            src = AssetSource(resolved)
        outcome = run_access_point(grid, resolved, src)
        folder = Path(out_dir or context.run_config.get("output-dir") or
                      Path("outputs") / "flwr" / str(context.run_id))  # fmt: skip
        written = outcome.save(folder)
        logger.info("%s", headline(outcome.results))
        logger.info("wrote %s to %s", ", ".join(p.name for p in written), folder)

    return app


# `flwr run .` entry point ([tool.flwr.app.components] serverapp).
app = make_server_app()
