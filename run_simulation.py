"""Run one experiment (or a Hydra sweep with -m) as a Flower simulation on Ray.

    python run_simulation.py                                   # the default run
    python run_simulation.py strategy=multi_link communication.channel_usage=2
    python run_simulation.py communication.channel_usage=1,2,4 seed=27,42 \\
        strategy=federated,multi_link -m                        # a sweep

The configuration is validated before Ray starts; the encoders, latents and
heads are built (or read from the cache) here, once, before the users start.
Each run writes results.parquet/csv, history.csv, failures.csv and
precoders.npz to its Hydra output folder and prints the per-user table and the
mean accuracy. A sweep (-m) runs all its cells in as few Flower simulations as
possible and keeps each finished cell in ``sweep_store``, so a sweep started
again redoes only what did not finish (``hydra_plugins/fedalign_sweep_launcher``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from launch.environment import quiet

quiet()  # before flwr and ray are imported

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from common.run.reporting import per_user_table  # noqa: E402
from common.run.settings import ConfigError, settings_from_config  # noqa: E402
from launch.sweeps import cell_store  # noqa: E402


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    try:
        settings = settings_from_config(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    store = cell_store(cfg) if HydraConfig.get().mode == RunMode.MULTIRUN else None
    if store is not None and store.finished(settings):  # run by the sweep launcher, or earlier
        outcome = store.load(settings)
        outcome.save(out_dir)
        print(f"cell {store.path(settings).name}: {' '.join(HydraConfig.get().overrides.task)}")
    else:
        from launch.simulation import prepare, simulate

        prepare(settings)
        outcome = simulate(settings, out_dir=out_dir)
        if store is not None:
            store.save(settings, outcome)
    print(per_user_table(outcome.results))
    return float(outcome.results.accuracy.mean())


if __name__ == "__main__":
    main()
