"""Alignment on the embedded zoo: accuracy grows with channel uses and with SNR."""

import numpy as np
import pytest

from common.assets.source import AssetSource
from common.run.driver import run_experiment
from conf import settings

pytestmark = pytest.mark.slow
SEEDS = (27, 42, 100)


@pytest.fixture(scope="module")
def problems():
    base = settings("experiment.progress=false")
    return base, {seed: AssetSource(base.replace(seed=seed)).problem() for seed in SEEDS}


def mean_accuracy(problems, **changes) -> float:
    base, by_seed = problems
    runs = []
    for seed in SEEDS:
        run = run_experiment(by_seed[seed], base.replace(seed=seed, **changes))
        runs.append(run.results.accuracy.mean())
    return float(np.mean(runs))


def test_accuracy_rises_with_channel_uses(problems):
    acc = [mean_accuracy(problems, channel_uses=u) for u in (1, 4, 10)]
    assert acc[0] < acc[1] < acc[2], acc


def test_accuracy_rises_with_snr(problems):
    low, high = (mean_accuracy(problems, snr_db=snr) for snr in (-10.0, 20.0))
    assert low < high, (low, high)


def test_aligned_accuracy_stays_below_the_clean_bound(problems):
    base, by_seed = problems
    results = run_experiment(by_seed[42], base).results
    assert (results.accuracy <= results.clean_accuracy + 0.02).all()
    assert results.accuracy.mean() > 0.5
