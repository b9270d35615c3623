"""The paper's study: the cells behind every figure, as grids over the run settings.

Grids follow ``shared/docs/PAPER_EXPERIMENTS.md`` (six seeds, u ∈ {1, 2, 4, 6,
8, 10, 20}, square antenna pairs, Top-K up to u = 10, SNR from −20 to 30 dB,
both user groups at 100/50/10 % pilots). ``quick`` gives a small version of
each grid with the same structure, for tests and a first look.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from common.run.settings import RunSettings

PAPER_SEEDS = (27, 42, 100, 123, 144, 200)
CHANNEL_USES = (1, 2, 4, 6, 8, 10, 20)
TOP_K_CHANNEL_USES = (1, 2, 3, 4, 5, 10)  # its indices cost as many channel uses again
ANTENNA_PAIRS = ((1, 1), (2, 2), (4, 4))
SNR_DB = (-20.0, -10.0, 10.0, 20.0, 30.0)
SNR_CHANNEL_USES = {"federated": (1, 4, 8), "first_k": (1, 4, 8), "top_k": (2, 4)}
GROUPS = ("heterogeneous", "homogeneous")
PILOT_FRACTIONS = (1.0, 0.5, 0.1)


@dataclass(frozen=True)
class StudyGrid:
    """Axis values of one study; ``quick`` keeps each axis short."""

    seeds: tuple[int, ...] = PAPER_SEEDS
    channel_uses: tuple[int, ...] = CHANNEL_USES
    top_k_channel_uses: tuple[int, ...] = TOP_K_CHANNEL_USES
    antenna_pairs: tuple[tuple[int, int], ...] = ANTENNA_PAIRS
    snr_db: tuple[float, ...] = SNR_DB
    snr_channel_uses: tuple[tuple[str, tuple[int, ...]], ...] = tuple(SNR_CHANNEL_USES.items())
    pilot_fractions: tuple[float, ...] = PILOT_FRACTIONS

    @classmethod
    def quick(cls, seeds: tuple[int, ...] = (42,)) -> StudyGrid:
        return cls(
            seeds=seeds,
            channel_uses=(1, 4),
            top_k_channel_uses=(1, 4),
            antenna_pairs=((2, 2), (4, 4)),
            snr_db=(-10.0, 20.0),
            snr_channel_uses=(("federated", (4,)), ("first_k", (4,)), ("top_k", (2,))),
            pilot_fractions=(1.0, 0.1),
        )


def _product(base: RunSettings, **axes: Iterable) -> list[RunSettings]:
    names = list(axes)
    return [base.replace(**dict(zip(names, values, strict=True)))
            for values in itertools.product(*axes.values())]  # fmt: skip


def compression_cells(base: RunSettings, grid: StudyGrid) -> list[RunSettings]:
    """Accuracy and MSE vs ζ: every method, every square antenna pair, every seed, 20 dB."""
    cells = []
    for (n_tx, n_rx), seed in itertools.product(grid.antenna_pairs, grid.seeds):
        at = base.replace(antennas_tx=n_tx, antennas_rx=n_rx, seed=seed)
        cells += _product(at, method=("federated", "multi_link", "first_k"),
                          channel_uses=grid.channel_uses)  # fmt: skip
        cells += _product(at, method=("top_k",), channel_uses=grid.top_k_channel_uses)
    return cells


def snr_cells(base: RunSettings, grid: StudyGrid) -> list[RunSettings]:
    """Accuracy vs SNR at 4×4: federated and First-K at u ∈ {1, 4, 8}, Top-K at u ∈ {2, 4}."""
    at = base.replace(antennas_tx=4, antennas_rx=4)
    cells = []
    for method, uses in grid.snr_channel_uses:
        cells += _product(at, method=(method,), channel_uses=uses, snr_db=grid.snr_db,
                          seed=grid.seeds)  # fmt: skip
    return cells


def group_cells(base: RunSettings, grid: StudyGrid, models: dict[str, tuple[str, ...]]) -> list:
    """Heterogeneous vs homogeneous users (federated, 4×4) per semantic pilot fraction."""
    at = base.replace(method="federated", antennas_tx=4, antennas_rx=4)
    cells = []
    for group in GROUPS:
        cells += _product(at.replace(group=group, models=models[group]),
                          pilot_fraction=grid.pilot_fractions, channel_uses=grid.channel_uses,
                          seed=grid.seeds)  # fmt: skip
    return cells
