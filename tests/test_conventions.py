"""conventions=paper: each of the paper code's choices, and nothing changes by default."""

import math

import numpy as np
import pytest

from common.maths import fading
from common.maths.conventions import CORRECTED, PAPER, Conventions
from common.maths.seeding import Stream, rng
from common.maths.whitening import fit_whitening
from common.run.driver import build_parties, run_experiment
from tests.synthetic import link, make_problem, settings_for

PROBLEM = make_problem(n=300, n_test=600, ap_dim=16, user_dims=(12, 9))


def test_noise_and_channel_scaling_follow_the_paper_code():
    at = link(antennas_rx=2, channel_uses=4, snr_db=10.0)
    assert CORRECTED.noise_variance(at) == at.noise_variance
    sigma = math.sqrt((1 / 2) / 10.0) / 4  # σ = √((1/Nr)/SNR)/u
    assert PAPER.noise_variance(at) == pytest.approx(sigma**2)
    assert PAPER.noise_variance(link(snr_db=math.inf)) == 0.0
    h = PAPER.channel_scale * fading.cn((300, 300), np.random.default_rng(0))
    assert np.mean(np.abs(h) ** 2) == pytest.approx(0.5, abs=0.01)
    assert np.std(h.real) == pytest.approx(0.5, abs=0.01)
    loading = PAPER.paper_g_loading(100, at, 3)
    np.testing.assert_allclose(loading, np.full((3, 3), 100 * sigma * (1 + 1j)))


def test_metrics_and_whitening_follow_the_paper_code():
    labels = np.array([0] * 500 + [1] * 12 + [0] * 6 + [1] * 6)  # two batches: 512 + 12
    predictions = labels.copy()
    predictions[500:512] = 0  # class 1 of the first batch entirely wrong
    assert CORRECTED.accuracy(predictions, labels) == pytest.approx(512 / 524)
    assert PAPER.accuracy(predictions, labels) == pytest.approx((0.5 + 1.0) / 2)
    at = link(channel_uses=4)
    assert PAPER.mse(np.ones(4), np.zeros(4), at) == 0.25
    assert CORRECTED.mse(np.ones(4), np.zeros(4), at) == 1.0
    v = rng(0, Stream.AP_INIT).standard_normal((3, 5)) + 0j
    ours, theirs = fit_whitening(v), fit_whitening(v, unbiased=True)
    np.testing.assert_allclose(theirs.chol, ours.chol * math.sqrt(5 / 4))
    with pytest.raises(ValueError, match="'corrected' or 'paper'"):
        Conventions("published")


def test_the_paper_conventions_change_only_what_they_name():
    base = settings_for(PROBLEM, rounds=4, channel_uses=2, seed=3)
    paper = base.replace(**{"conventions.name": "paper"})
    ap, users = build_parties(PROBLEM, paper)
    signal = ap.test_messages([0])[0].signal
    np.testing.assert_allclose(signal, ap.state.f @ ap._x_test_bar)  # F, not Z, at test time
    multi, _ = build_parties(PROBLEM, paper.replace(**{"strategy.name": "multi_link"}))
    np.testing.assert_array_equal(multi.states[0].f, multi.states[1].f)  # one initial F
    ours, _ = build_parties(PROBLEM, base.replace(**{"strategy.name": "multi_link"}))
    assert not np.allclose(ours.states[0].f, ours.states[1].f)
    a, b = run_experiment(PROBLEM, base), run_experiment(PROBLEM, paper)
    assert not np.allclose(a.precoders["F"], b.precoders["F"])
    assert b.results.accuracy.between(0, 1).all()
    # First-K keeps its own construction: only the channel, noise and metrics change
    first = run_experiment(PROBLEM, paper.replace(**{"strategy.name": "first_k"})).results
    assert first.accuracy.between(0, 1).all()


def test_the_default_is_the_corrected_reading():
    from conf import settings

    assert settings().conventions.name == "corrected"
    assert settings("conventions=paper").conventions.name == "paper"
