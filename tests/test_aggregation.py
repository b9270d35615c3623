"""Consensus rules, fault injection and partial participation."""

from __future__ import annotations

import numpy as np
import pytest

from common.maths.aggregation import Aggregator, Mean, aggregator
from common.parties import protocol
from common.parties.faults import corrupt
from common.run.driver import run_experiment
from tests.synthetic import make_problem, settings_for

PROBLEM = make_problem(n=300, n_test=150, ap_dim=16, user_dims=(12, 14, 10, 13, 11), seed=3)
BASE = settings_for(PROBLEM, rounds=8, channel_uses=2, seed=4)


class FirstUser(Aggregator):
    """A user-defined rule, loaded by import path: trusts user 0 only."""

    def combine(self, stack, weights):
        return stack[0]


def _stack(rng, k=5, shape=(3, 4)):
    return [rng.standard_normal(shape) + 1j * rng.standard_normal(shape) for _ in range(k)]


def test_rules_on_complex_matrices():
    rng = np.random.default_rng(0)
    local = _stack(rng)
    ones = [1.0] * 5
    np.testing.assert_array_equal(aggregator("mean", 0.2)(local, ones), np.mean(local, axis=0))
    np.testing.assert_allclose(
        aggregator("weighted_mean", 0.2)(local, ones), np.mean(local, axis=0), rtol=1e-12
    )
    weighted = aggregator("weighted_mean", 0.2)(local, [3.0, 1, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(
        weighted,
        (3 * local[0] + local[1] + 0.5 * local[2] + 0.25 * local[3] + 0.25 * local[4]) / 5,
        rtol=1e-12,
    )
    median = aggregator("median", 0.2)(local, ones)
    np.testing.assert_array_equal(median.real, np.median(np.stack(local).real, axis=0))
    np.testing.assert_array_equal(median.imag, np.median(np.stack(local).imag, axis=0))
    # trimmed mean with beta = 0.2 of 5 users drops one value at each end per coordinate
    trimmed = aggregator("trimmed_mean", 0.2)(local, ones)
    parts = np.sort(np.stack(local).real, axis=0)[1:4]
    np.testing.assert_allclose(trimmed.real, parts.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        aggregator("trimmed_mean", 0.0)(local, ones), np.mean(local, axis=0), rtol=1e-12
    )
    custom = aggregator("tests.test_aggregation:FirstUser", 0.2)
    np.testing.assert_array_equal(custom(local, ones), local[0])


def test_robust_rules_ignore_a_minority_of_wild_values():
    rng = np.random.default_rng(1)
    honest = _stack(rng, k=3)
    wild = [1e6 * m for m in _stack(rng, k=2)]
    for name in ("median", "trimmed_mean"):
        combined = aggregator(name, 0.4)(honest + wild, [1.0] * 5)
        spread = np.max(np.abs(np.stack(honest)), axis=0)
        assert np.all(np.abs(combined.real) <= spread) and np.all(np.abs(combined.imag) <= spread)
    assert np.max(np.abs(Mean()(honest + wild, [1.0] * 5))) > 1e4


def test_bad_rules_and_inputs_are_refused():
    with pytest.raises(ValueError, match=r"trim_fraction must be in \[0, 0.5\), got 0.5"):
        aggregator("trimmed_mean", 0.5)
    with pytest.raises(ValueError, match="aggregator 'nope'.*mean"):
        aggregator("nope", 0.2)
    with pytest.raises(ValueError, match="is not a subclass of"):
        aggregator("numpy:ndarray", 0.2)
    with pytest.raises(ValueError, match="weights must be finite and > 0"):
        aggregator("weighted_mean", 0.2)(_stack(np.random.default_rng(2), k=2), [1.0, -1.0])


def test_corruptions():
    message = protocol.AlignUplink(a_gram=np.eye(2, dtype=complex), a_y=np.ones((2, 3), complex))
    assert np.array_equal(corrupt(message, "scaled", 10.0, 1).a_y, 10 * message.a_y)
    assert np.isnan(corrupt(message, "nan", 10.0, 1).a_gram).all()
    noise = corrupt(message, "random", 10.0, 1)
    assert noise.a_y.dtype == complex and not np.allclose(noise.a_y, message.a_y)
    assert np.array_equal(noise.a_y, corrupt(message, "random", 10.0, 1).a_y)  # a fixed draw


def _mse(outcome) -> float:
    return float(outcome.results.mse.mean())


def test_a_random_user_breaks_the_mean_and_not_the_robust_rules():
    """One of five users sends noise (100x its uplink's RMS): the paper's mean is wrecked,
    median and trimmed mean stay near the fault-free run."""
    clean = _mse(run_experiment(PROBLEM, BASE))
    faulty = BASE.replace(
        **{"faults.users": 1}, **{"faults.kind": "random"}, **{"faults.scale": 100.0}
    )
    broken = run_experiment(PROBLEM, faulty)
    median = _mse(run_experiment(PROBLEM, faulty.replace(aggregator="median")))
    trimmed = _mse(run_experiment(PROBLEM, faulty.replace(aggregator="trimmed_mean")))
    assert _mse(broken) > 5 * clean and broken.results.accuracy.mean() < 0.5
    assert median < 1.2 * clean and trimmed < 1.2 * clean


def test_the_history_says_how_many_users_the_trimmed_mean_cut_per_end():
    """β = 0.2 of five users cuts one at each end; when two users' uplinks are rejected, the
    three left are averaged untrimmed (⌊0.6⌋ = 0), and the history says so, round by round."""
    trimmed = BASE.replace(aggregator="trimmed_mean")
    assert run_experiment(PROBLEM, trimmed).history.trimmed_per_end.tolist() == [1] * 8
    rejected = trimmed.replace(**{"faults.users": 2}, **{"faults.kind": "nan"})
    assert run_experiment(PROBLEM, rejected).history.trimmed_per_end.tolist() == [0] * 8
    assert run_experiment(PROBLEM, BASE).history.trimmed_per_end.tolist() == [0] * 8


def test_a_scaled_uplink_barely_matters():
    """Scaling both Aᴴ A and Aᴴ Ȳ by c leaves the local F step's solution nearly unchanged
    (only the ρ term is not scaled): a gain error is no attack on this protocol."""
    clean = _mse(run_experiment(PROBLEM, BASE))
    for scale in (0.01, 1e4):
        faulty = BASE.replace(
            **{"faults.users": 1}, **{"faults.kind": "scaled"}, **{"faults.scale": scale}
        )
        assert _mse(run_experiment(PROBLEM, faulty)) < 1.1 * clean


def test_nan_uplinks_are_rejected_and_recorded_never_in_f():
    faulty = BASE.replace(**{"faults.users": 2}, **{"faults.kind": "nan"})
    outcome = run_experiment(PROBLEM, faulty)
    assert np.all(np.isfinite(outcome.precoders["F"]))
    rejected = outcome.failures[outcome.failures.reason.str.startswith("uplink rejected")]
    assert sorted(set(rejected.user)) == [0, 1] and len(rejected) == 2 * BASE.experiment.rounds
    assert "align_uplink.a_gram has 64 non-finite value(s)" in rejected.reason.iloc[0]
    assert outcome.history.failures.tolist() == [2] * BASE.experiment.rounds
    # the update used the three others: the same as a run in which users 0 and 1 fail
    assert outcome.results.user.tolist() == [0, 1, 2, 3, 4]


def test_partial_participation_samples_users_per_round():
    part = BASE.replace(participation=0.6)  # 3 of 5 users per round
    session_rounds = run_experiment(PROBLEM, part)
    assert session_rounds.history.messages_down.tolist() == [3] * BASE.experiment.rounds
    again = run_experiment(PROBLEM, part)
    np.testing.assert_array_equal(again.precoders["F"], session_rounds.precoders["F"])
    full = run_experiment(PROBLEM, BASE)
    assert not np.allclose(full.precoders["F"], session_rounds.precoders["F"])
    assert session_rounds.results.user.tolist() == [0, 1, 2, 3, 4]  # every user is evaluated


class Shrunk(FirstUser):
    """A rule with a parameter of its own (a consensus setting of the same name)."""

    def __init__(self, trim_fraction: float = 0.0, participation: float = 1.0) -> None:
        super().__init__(trim_fraction)
        self.participation = participation


def test_a_rule_gets_the_consensus_settings_its_constructor_names():
    rule = aggregator("tests.test_aggregation:Shrunk", 0.1, participation=0.5, other=3)
    assert (rule.trim_fraction, rule.participation) == (0.1, 0.5)
    assert aggregator("mean", 0.2, participation=0.5).trim_fraction == 0.2  # others left out


def test_weights_near_the_float_maximum_do_not_overflow_the_weighted_mean():
    local = _stack(np.random.default_rng(3), k=3)
    for huge in ([1e308, 1e308, 1e308], [1e308, 1e308, 5e307]):
        combined = aggregator("weighted_mean", 0.2)(local, huge)
        w = np.array(huge) / max(huge)
        expected = np.tensordot(w / w.sum(), np.stack(local), axes=1)
        np.testing.assert_allclose(combined, expected, rtol=1e-12)
        assert np.isfinite(combined).all() and np.abs(combined).max() > 0.1  # not all zero
    with pytest.raises(ValueError, match="weights must be finite and > 0"):
        aggregator("weighted_mean", 0.2)(local, [1.0, np.inf, 1.0])


@pytest.mark.parametrize("rule", ["mean", "weighted_mean", "trimmed_mean", "median"])
def test_finite_local_precoders_near_the_float_maximum_give_a_finite_consensus(rule):
    """numpy's mean sums first: two finite F_k of 1e308 made F = inf, and the run stopped."""
    local = [np.full((2, 3), 1e308 + 1e308j), np.full((2, 3), 9e307 - 1e308j)] * 3
    combined = aggregator(rule, 0.2)(local, [1.0] * 6)
    assert np.isfinite(combined).all()
    np.testing.assert_allclose(combined, np.full((2, 3), 9.5e307 + 0j), rtol=1e-12, atol=1e295)
    for k in (2, 11, 37, 300):  # the mean of k maxima is the maximum, finite
        at_max = np.full((k, 1, 2), np.finfo(float).max) * np.array([1, -1j])
        assert np.isfinite(aggregator(rule, 0.2)(list(at_max), [1.0] * k)).all()
    ordinary = _stack(np.random.default_rng(4), k=6)  # no overflow: numpy's mean, bit for bit
    if rule == "mean":
        assert np.array_equal(aggregator(rule)(ordinary, [1.0] * 6), np.mean(ordinary, axis=0))


def test_a_user_reporting_a_subnormal_pilot_mse_is_weighed_and_the_run_goes_on():
    """A reported pilot MSE of 1e-320 (its inverse overflows) gets the largest finite
    weight: that user dominates the weighted mean, and no round stops."""
    import dataclasses

    from common.run.driver import build_parties
    from common.run.session import Session
    from tests.synthetic import make_problem, settings_for

    problem = make_problem(n=200, n_test=60, ap_dim=12, user_dims=(14, 9, 10))
    run = settings_for(problem, rounds=3, **{"consensus.aggregator": "weighted_mean"})
    ap, users = build_parties(problem, run)
    session = Session(ap, run, problem.ap)
    for rnd in session.rounds:
        downlink = session.train_downlink(rnd, [u.index for u in users])
        replies = {k: users[k].train(m) for k, m in downlink.items()}
        metrics = {**replies[1].metrics, "pilot_mse": 1e-320}
        replies[1] = dataclasses.replace(replies[1], metrics=metrics)
        session.finish_train_round(rnd, replies, {})
    assert session.failures == [] and len(session.history) == 3
    assert np.isfinite(ap.state.f).all() and np.linalg.norm(ap.state.z) > 0


def test_an_uplink_that_overflows_the_update_is_its_users_failure_and_f_stays_finite():
    """A faulty user scaling its uplink by 1e308 (finite, so it passes the finite check)
    is rejected for its non-finite local step; the honest users keep training."""
    from common.run.driver import run_experiment
    from tests.synthetic import make_problem, settings_for

    problem = make_problem(n=300, n_test=100, ap_dim=16, user_dims=(14, 9, 10))
    faulty = {"faults.users": 1, "faults.kind": "scaled", "faults.scale": 1e308}
    honest = run_experiment(problem, settings_for(problem, rounds=4))
    outcome = run_experiment(problem, settings_for(problem, rounds=4, **faulty))
    assert set(outcome.failures.user) == {0} and len(outcome.failures) == 4
    assert "local F step is not finite" in outcome.failures.reason.iloc[0]
    assert all(np.isfinite(v).all() for v in outcome.precoders.values())
    good = outcome.results.set_index("user").accuracy
    assert (good.loc[[1, 2]] >= honest.results.set_index("user").accuracy.loc[[1, 2]] - 0.05).all()


def test_rho_beyond_its_range_is_refused_and_a_vanishing_precoder_is_named(caplog):
    from common.run.driver import run_experiment
    from common.run.settings import ConfigError
    from tests.synthetic import make_problem, settings_for

    problem = make_problem(n=200, n_test=60, ap_dim=12, user_dims=(14, 9))
    for rho in (1e-300, 1e300, 0.0):
        with pytest.raises(ConfigError, match=r"strategy.rho.*must be in \[1e-12, 1e12\]"):
            settings_for(problem, rho=rho)
    with caplog.at_level("WARNING"):
        run_experiment(problem, settings_for(problem, rounds=2, rho=1e12))
    assert "strategy.rho=1e+12 holds F near zero" in caplog.text


class Overflowing(Aggregator):
    """A rule of one's own whose consensus overflows."""

    def combine(self, stack, weights):
        return np.full(stack.shape[1:], np.inf, dtype=stack.dtype)


def test_an_ap_whose_update_overflows_stops_naming_its_settings():
    """An update that is not finite (here a rule of one's own that overflows; the built-in
    rules stay finite for finite steps): the AP does not carry an infinite F into the
    next round, it stops and says which settings to look at."""
    from common.parties.consensus import LocalPrecoder
    from common.run.driver import build_parties
    from tests.synthetic import make_problem, settings_for

    problem = make_problem(n=200, n_test=60, ap_dim=12, user_dims=(14, 9))
    ap, _ = build_parties(problem, settings_for(problem, rounds=2))
    ap.aggregator = Overflowing()
    huge = np.full(ap.shape, 1.5e308, dtype=complex)
    with pytest.raises(FloatingPointError, match=r"F is not finite.*strategy.rho=1,"):
        ap.update({0: LocalPrecoder(huge), 1: LocalPrecoder(huge)})
