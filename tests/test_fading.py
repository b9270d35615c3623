"""Channel models (second-order statistics), channel estimation and ageing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.maths import fading
from common.maths.fading import ChannelConfig, CsiConfig, draw_link_channels
from common.run.driver import run_experiment
from tests.synthetic import make_problem, settings_for

RAYLEIGH, PERFECT = fading.RAYLEIGH, fading.PERFECT_CSI


def _config(**changes) -> ChannelConfig:
    return ChannelConfig(**{**RAYLEIGH.model_dump(), **changes})


def _csi(**changes) -> CsiConfig:
    return CsiConfig(**{**PERFECT.model_dump(), **changes})


def _draws(config: ChannelConfig, n_rx=4, n_tx=4, count=4000) -> np.ndarray:
    rng = np.random.default_rng(0)
    model = fading.ChannelModel(config, n_rx, n_tx, rng)
    return model.mean + model.scattered(count, rng)


@pytest.mark.parametrize(
    "config",
    [
        _config(),
        _config(model="correlated", correlation=0.7),
        _config(model="rician", k_factor=4.0),
    ],
)
def test_every_model_has_unit_mean_power_per_entry(config):
    h = _draws(config)
    assert np.mean(np.abs(h) ** 2) == pytest.approx(1.0, abs=0.03)


def test_correlated_channels_have_the_configured_exponential_correlation():
    rho = 0.7
    h = _draws(_config(model="correlated", correlation=rho), count=20000)
    # receive side: E[h_i h_j^*] over a column = rho^|i-j| (unit transmit power per column)
    r_rx = np.einsum("bik,bjk->ij", h, h.conj()) / (h.shape[0] * h.shape[2])
    expected = rho ** np.abs(np.subtract.outer(np.arange(4), np.arange(4)))
    np.testing.assert_allclose(r_rx.real, expected, atol=0.03)
    r_tx = np.einsum("bki,bkj->ij", h, h.conj()) / (h.shape[0] * h.shape[1])
    np.testing.assert_allclose(r_tx.real, expected, atol=0.03)
    assert np.abs(r_tx.imag).max() < 0.03
    assert np.allclose(fading.exponential_correlation(0.5, 3)[0], [1, 0.5, 0.25])


def test_rician_mean_is_the_line_of_sight_component_with_power_k_over_k_plus_1():
    k = 4.0
    h = _draws(_config(model="rician", k_factor=k), count=20000)
    mean = h.mean(axis=0)
    np.testing.assert_allclose(np.abs(mean) ** 2, np.full((4, 4), k / (k + 1)), atol=0.02)
    scattered = h - mean
    assert np.mean(np.abs(scattered) ** 2) == pytest.approx(1 / (k + 1), abs=0.02)


def test_the_default_channel_is_todays_rayleigh_draw():
    rng = np.random.default_rng([5, 1, 2])
    expected = fading.cn((3, 2), np.random.default_rng([5, 1, 2]))
    links = draw_link_channels(RAYLEIGH, PERFECT, 3, 2, 4, rng, np.random.default_rng(9))
    np.testing.assert_array_equal(links.train, np.kron(np.eye(4), expected))
    assert links.known is links.train or np.array_equal(links.known, links.train)
    np.testing.assert_array_equal(links.test, links.train)


@pytest.mark.parametrize("estimation", ["ls", "lmmse"])
def test_estimation_error_follows_the_training_snr(estimation):
    errors = []
    for snr in (0.0, 10.0, 20.0):
        csi = _csi(estimation=estimation, csi_snr_db=snr)
        total = 0.0
        for seed in range(200):
            links = draw_link_channels(
                RAYLEIGH,
                csi,
                4,
                4,
                1,
                np.random.default_rng([seed, 1]),
                np.random.default_rng([seed, 2]),
            )
            total += np.mean(np.abs(links.known - links.train) ** 2)
        errors.append(total / 200)
    variance = 10.0 ** (-np.array([0.0, 10.0, 20.0]) / 10.0)
    if estimation == "ls":
        np.testing.assert_allclose(errors, variance, rtol=0.1)
    else:  # LMMSE of a CN(0, 1) entry: error variance σ²/(1 + σ²), below LS
        np.testing.assert_allclose(errors, variance / (1 + variance), rtol=0.1)


def test_ageing_keeps_the_configured_correlation_and_the_power():
    csi = _csi(ageing=0.6)
    train, test = [], []
    for seed in range(2000):
        links = draw_link_channels(
            RAYLEIGH,
            csi,
            2,
            2,
            1,
            np.random.default_rng([seed, 1]),
            np.random.default_rng([seed, 2]),
        )
        train.append(links.train)
        test.append(links.test)
    train, test = np.array(train), np.array(test)
    assert np.mean(np.abs(test) ** 2) == pytest.approx(1.0, abs=0.05)
    assert np.mean(test * train.conj()).real == pytest.approx(0.6, abs=0.05)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"model": "nakagami"}, "model must be one of rayleigh, correlated, rician"),
        ({"correlation": 1.0}, r"correlation must be in \[0, 1\), got 1.0"),
        ({"k_factor": -1.0}, "k_factor must be in >= 0"),
        ({"ageing": 1.5}, r"ageing must be in \[0, 1\]"),
        ({"estimation": "oracle"}, "estimation must be one of perfect, ls, lmmse"),
        ({"coherence_uses": -2}, "coherence_uses must be a whole number >= 0"),
    ],
)
def test_bad_channel_values_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        (_csi if set(override) & set(CsiConfig.model_fields) else _config)(**override)


PROBLEM = make_problem(n=300, n_test=150, ap_dim=16, user_dims=(12, 14, 10), seed=3)
BASE = settings_for(PROBLEM, rounds=8, channel_uses=2, seed=4, snr_db=20.0)


def test_imperfect_csi_and_ageing_cost_accuracy_in_order():
    """Worse channel knowledge never helps: perfect <= LMMSE <= LS error, and an aged test
    channel degrades what a static one gives."""

    def mse(**changes) -> float:
        return float(run_experiment(PROBLEM, BASE.replace(**changes)).results.mse.mean())

    perfect = mse()
    ls, lmmse = mse(estimation="ls", csi_snr_db=0.0), mse(estimation="lmmse", csi_snr_db=0.0)
    assert perfect < lmmse <= ls * 1.05
    assert mse(estimation="ls", csi_snr_db=30.0) < 1.1 * perfect
    assert mse(ageing=0.5) > 1.2 * perfect
    assert mse(model="correlated", correlation=0.0) == perfect  # the same draws


def test_every_method_runs_on_every_model():
    for model in (
        {"model": "correlated", "correlation": 0.8},
        {"model": "rician", "k_factor": 2.0},
        {"coherence_uses": 1},
    ):
        for method in ("federated", "first_k"):
            outcome = run_experiment(PROBLEM, BASE.replace(**{"strategy.name": method}, **model))
            assert math.isfinite(outcome.results.mse.mean())
