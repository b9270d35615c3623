"""Run one experiment (or a Hydra sweep with -m) as a Flower simulation on Ray.

    python run_simulation.py                                   # the default run
    python run_simulation.py strategy=multi_link communication.channel_usage=2
    python run_simulation.py communication.channel_usage=1,2,4 seed=27,42 \\
        strategy=federated,multi_link -m                        # a sweep

The configuration is validated before Ray starts; the encoders, latents and
heads are built (or read from the cache) here, once, before the users start.
Each run writes results.parquet/csv, history.csv, failures.csv and
precoders.npz to its Hydra output folder and prints the per-user table and the
mean accuracy.
"""

from __future__ import annotations

import sys
from pathlib import Path

from launch.environment import quiet

quiet()  # before flwr and ray are imported

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from common.run.reporting import per_user_table  # noqa: E402
from common.run.settings import ConfigError, RunSettings, settings_from_config  # noqa: E402


def prepare(settings: RunSettings) -> None:
    """Build or load every party's encoder latents and heads (progress bars here, once)."""
    from common.assets.source import AssetSource

    table = AssetSource(settings).warm(progress=settings.progress)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    try:
        settings = settings_from_config(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    from launch.simulation import simulate

    prepare(settings)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    outcome = simulate(settings, out_dir=out_dir)
    print(per_user_table(outcome.results))
    return float(outcome.results.accuracy.mean())


if __name__ == "__main__":
    main()
