"""Run one experiment (or a Hydra sweep with -m) as a Flower simulation on Ray.

    python run_simulation.py                                   # the default run
    python run_simulation.py strategy=multi_link communication.channel_usage=2
    python run_simulation.py communication.channel_usage=1,2,4 seed=27,42 \
        strategy=federated,multi_link -m                        # a sweep

The configuration is validated before Ray starts; the encoders, latents and
heads are built (or read from the cache) here, once, before the users start.
Each run writes results.parquet/csv, history.csv and failures.csv to its Hydra
output folder and prints the per-user table and the mean accuracy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from server.simulation import QUIET_ENV

for _key, _value in QUIET_ENV.items():  # before flwr and ray are imported
    os.environ.setdefault(_key, _value)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from common.reporting import headline, per_user_table, write_tables  # noqa: E402
from common.settings import ConfigError, RunSettings, settings_from_config  # noqa: E402


def prepare(settings: RunSettings) -> None:
    """Build or load every party's encoder latents and heads (progress bars here, once)."""
    from common.asset_source import AssetSource

    table = AssetSource(settings).warm(progress=settings.progress)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    try:
        settings = settings_from_config(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    from server.simulation import simulate

    prepare(settings)
    outcome = simulate(settings)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    write_tables(out_dir, outcome.tables())
    print(per_user_table(outcome.results))
    print(headline(outcome.results))
    print(f"results: {out_dir / 'results.parquet'} (+ results.csv, history.csv, failures.csv)")
    return float(outcome.results.accuracy.mean())


if __name__ == "__main__":
    main()
