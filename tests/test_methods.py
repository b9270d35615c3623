"""First-K/Top-K baselines, overhead accounting, protocol and bad input."""

import math

import numpy as np
import pytest

from common.maths.seeding import Stream
from common.parties import protocol
from common.parties.access_point import access_point_class
from common.parties.feature_selection import TopKAccessPoint
from common.parties.user import UserData
from common.run.driver import build_parties, run_experiment
from common.run.sources import AlignmentProblem, APInputs
from conf import settings
from tests.synthetic import link, make_problem, settings_for

NOISE_FREE = dict(antennas_tx=2, antennas_rx=2, channel_uses=2, snr_db=math.inf)


@pytest.mark.parametrize("method", ["first_k", "top_k"])
def test_noise_free_baseline_delivers_the_selected_features_exactly(method):
    problem = make_problem(ap_dim=24)
    ap, users = build_parties(
        problem, settings_for(problem, **{"strategy.name": method}, **NOISE_FREE)
    )
    message = ap.train_messages([0])[0]
    user = users[0]
    received = user.receive(message.signal, Stream.AP_INIT)
    features = user.decode_features(
        received, message.mean, message.chol, message.indices, int(message.feature_dim[0])
    )
    x = problem.ap.pilots.T
    k = 2 * link(**NOISE_FREE).tx_dim
    if method == "first_k":
        np.testing.assert_allclose(features[:k], x[:k], atol=1e-8)
        assert not features[k:].any()
    else:
        kept = np.abs(features) > 0
        assert (kept.sum(axis=0) == k).all()
        threshold = np.sort(np.abs(x), axis=0)[-k]
        assert (np.abs(x[kept]) >= np.repeat(threshold[None], 24, 0)[kept] - 1e-12).all()
        np.testing.assert_allclose(features[kept], x[kept], atol=1e-8)


def test_top_k_selects_largest_magnitudes_in_index_order():
    problem = make_problem(ap_dim=10)
    ap = TopKAccessPoint(
        problem.ap.pilots,
        problem.ap.test,
        link(antennas_tx=1, antennas_rx=1, channel_uses=2),
        [0],
        rounds=1,
        rho=1.0,
        seed=0,
    )
    values, idx = ap._select(np.array([[0.1, -5.0], [-3.0, 0.2], [2.0, 4.0], [0.5, 0.0]]))
    assert ap.k == 4
    np.testing.assert_array_equal(idx[:, 0], [0, 1, 2, 3])
    small = TopKAccessPoint(
        problem.ap.pilots,
        problem.ap.test,
        link(antennas_tx=1, antennas_rx=1, channel_uses=1),
        [0],
        rounds=1,
        rho=1.0,
        seed=0,
    )
    values, idx = small._select(np.array([[0.1, -5.0], [-3.0, 0.2], [2.0, 4.0], [0.5, 0.0]]))
    np.testing.assert_array_equal(idx, [[1, 0], [2, 2]])
    np.testing.assert_array_equal(values, [[-3.0, -5.0], [2.0, 4.0]])


def test_overhead_counts_the_bytes_each_method_puts_on_the_air():
    problem = make_problem(n=200, n_test=50, ap_dim=24)
    base = settings_for(problem, rounds=4, antennas_tx=2, antennas_rx=2, channel_uses=3)
    n, n_test, s = 200, 50, 6  # Nt·u = 6, k = 12
    runs = {
        m: run_experiment(problem, base.replace(**{"strategy.name": m}))
        for m in ("federated", "multi_link", "first_k", "top_k")
    }
    fed = runs["federated"].results.iloc[0]
    assert fed.bytes_down == 4 * 16 * s * n + 16 * s * n_test
    assert fed.bytes_up == 4 * 16 * (s * s + s * n)
    assert fed.messages == 4 * 2 + 1
    history = runs["federated"].history
    assert (history.messages_down == 2).all() and (
        history.bytes_up == 2 * 16 * (s * s + s * n)
    ).all()
    assert (
        runs["multi_link"].results.bytes_down.tolist()
        == runs["federated"].results.bytes_down.tolist()
    )
    first, top = runs["first_k"].results.iloc[0], runs["top_k"].results.iloc[0]
    side = 16 * s + 16 * s * s + 8  # whitening mean, Cholesky factor, feature_dim
    assert first.bytes_down == 16 * s * n + side + 16 * s * n_test
    assert top.bytes_down - first.bytes_down == 2 * 12 * (n + n_test)  # uint16 indices
    assert first.bytes_up == 0 and first.messages == 3 and first.rounds == 1


def test_messages_round_trip_through_arrays_and_reject_wrong_dtypes():
    msg = protocol.AlignUplink(a_gram=np.eye(3, dtype=complex), a_y=np.ones((3, 5), complex))
    back = protocol.decode(msg.KIND, msg.arrays())
    assert isinstance(back, protocol.AlignUplink)
    np.testing.assert_array_equal(back.a_y, msg.a_y)
    assert msg.nbytes == 16 * (9 + 15)
    with pytest.raises(TypeError, match="a_gram must have dtype complex128"):
        protocol.AlignUplink(a_gram=np.eye(3), a_y=np.ones((3, 5), complex))
    with pytest.raises(ValueError, match="needs arrays"):
        protocol.decode("align_uplink", {"a_gram": np.eye(3, dtype=complex)})
    with pytest.raises(ValueError, match="unknown message kind 'nope'"):
        protocol.decode("nope", {})


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_latents_are_rejected_naming_the_party(bad):
    problem = make_problem()
    user = problem.users[1]
    pilots = user.pilots.copy()
    pilots[3, 2] = bad
    broken = UserData(user.name, pilots, user.test, user.test_labels, user.predict)
    problem = AlignmentProblem(problem.ap, (broken,))
    expected = r"user 0 \(synthetic17\) pilot latents contains 1 NaN/Inf"
    with pytest.raises(ValueError, match=expected):
        run_experiment(problem, settings_for(problem, rounds=1))
    ap_pilots = make_problem().ap.pilots.copy()
    ap_pilots[0, 0] = bad
    with pytest.raises(ValueError, match="AP pilot latents contains 1 NaN/Inf"):
        ap = APInputs("s", "ap", ap_pilots, problem.ap.test)
        good = AlignmentProblem(ap, make_problem().users)
        run_experiment(good, settings_for(good, rounds=1))


def test_mismatched_pilot_counts_are_rejected():
    problem = make_problem()
    user = problem.users[0]
    short = UserData(user.name, user.pilots[:-5], user.test, user.test_labels, user.predict)
    with pytest.raises(ValueError, match="mismatched pilot counts: the AP has 600 pilots, user 0"):
        AlignmentProblem(problem.ap, (short,))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"rho": 0.0}, "rho"),
        ({"rho": -1.0}, "rho"),
        ({"rounds": 0}, "rounds"),
        ({"pilot_fraction": 0.0}, "pilot_fraction"),
        ({"pilot_fraction": 1.5}, "pilot_fraction"),
        ({"seed": -1}, "seed"),
        ({"strategy.name": "fedavg"}, "strategy"),
    ],
)
def test_run_settings_reject_bad_values(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        settings().replace(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


def test_paper_aliases_and_import_paths_resolve():
    assert settings().replace(**{"strategy.name": "shared"}).strategy.name == "federated"
    assert settings().replace(**{"strategy.name": "Top-K"}).strategy.name == "top_k"
    cls = access_point_class("common.parties.feature_selection:FirstKAccessPoint")
    assert cls.method == "first_k"
    with pytest.raises(ValueError, match="not a subclass"):
        access_point_class("common.maths.link:LinkConfig")
    assert access_point_class("federated").user_class.__name__ == "AdmmUser"
    assert access_point_class("top_k").user_class.__name__ == "FeatureMapUser"
    with pytest.raises(ValueError, match="could not be imported"):
        access_point_class("no_such_module:Thing")


def test_ill_conditioned_pilots_are_loaded_and_reported_in_history():
    problem = make_problem(ap_dim=12, user_dims=(10,))
    x = problem.ap.pilots.copy()
    x[:, [0, 6]] = 0.0  # complex symbol 0 (features 0 and 6) is constant: singular covariance
    problem = AlignmentProblem(APInputs("s", "ap", x, problem.ap.test), problem.users)
    history = run_experiment(problem, settings_for(problem, rounds=3)).history
    assert (history.whitening_loading_ap > 0).all()
    assert history.whitening_loading_users.eq(0).all()


def test_effective_channel_uses_charge_top_k_for_its_indices():
    problem = make_problem(ap_dim=24)
    base = settings_for(problem, rounds=2, channel_uses=3)
    rows = {
        m: run_experiment(problem, base.replace(**{"strategy.name": m})).results.iloc[0]
        for m in ("federated", "first_k", "top_k")
    }
    m_ap = 12  # 24 real features -> 12 complex symbols
    for method, row in rows.items():
        assert row.channel_usage == 3
        assert row.compression_factor == pytest.approx(100 * 3 / m_ap)
        expected = 6 if method == "top_k" else 3
        assert row.channel_usage_effective == expected, method
        assert row.compression_factor_effective == pytest.approx(100 * expected / m_ap)


def test_eigen_k_sends_principal_projections_and_its_basis_once():
    from common.run.driver import build_parties, run_experiment
    from tests.synthetic import make_problem, settings_for

    problem = make_problem(n=300, n_test=120, ap_dim=24, user_dims=(20, 18), seed=2)
    point = settings_for(
        problem,
        **{"strategy.name": "eigen_k"},
        antennas_tx=2,
        antennas_rx=2,
        channel_uses=1,
        seed=3,
    )
    ap, _ = build_parties(problem, point)
    pilots = ap.train_messages([0])[0]
    k = 2 * point.link.tx_dim
    assert pilots.basis.shape == (24, k + 1)
    directions = pilots.basis[:, :k]
    np.testing.assert_allclose(directions.T @ directions, np.eye(k), atol=1e-10)
    x = problem.ap.pilots
    leading = np.linalg.eigh(np.cov(x.T))[1][:, -1]
    assert abs(float(leading @ directions[:, 0])) == pytest.approx(1.0, abs=1e-9)
    assert ap.test_messages([0])[0].KIND == "feature_test"  # the basis is not sent again

    eigen = run_experiment(problem, point)
    first = run_experiment(problem, point.replace(**{"strategy.name": "first_k"}))
    assert eigen.results.mse.mean() < first.results.mse.mean()
    extra = eigen.results.bytes_down.iloc[0] - first.results.bytes_down.iloc[0]
    assert extra == pilots.basis.nbytes  # the directions and mean, counted once


def test_results_name_the_zoo_by_the_fingerprint_of_every_partys_assets():
    """Two runs on the same assets show the same ``zoo``; other assets (here another
    synthetic draw) another, and each row names its user's own (``user_assets``)."""
    from common.run.sources import SyntheticSource

    source = SyntheticSource(n=200, n_test=80, ap_dim=12, user_dims=(14, 9))
    run = settings_for(source.problem(), rounds=1)
    first, again = (run_experiment(source.problem(), run).results for _ in range(2))
    other = run_experiment(
        SyntheticSource(n=200, n_test=80, ap_dim=12, user_dims=(14, 9), seed=1).problem(), run
    ).results
    assert first.zoo.nunique() == 1 and len(first.zoo.iloc[0]) == 12
    assert first.zoo.tolist() == again.zoo.tolist() and first.zoo.iloc[0] != other.zoo.iloc[0]
    assert first.user_assets.nunique() == 2 and first.ap_assets.nunique() == 1
    assert first.user_assets.tolist() == [data.fingerprint for data in source.problem().users]


def test_the_feature_map_solves_only_for_the_features_that_were_sent():
    """First-K and Eigen-K zero-fill k of d features: leaving the all-zero ones out of the
    solve gives the full ridge solution (their weights are exactly 0), in a k×k system."""
    from common.parties.feature_selection import apply_affine, least_squares_map, zero_fill

    rng = np.random.default_rng(5)
    x = zero_fill(rng.standard_normal((6, 300)), None, 40)  # 6 of 40 features sent
    y = rng.standard_normal((9, 300))
    w = least_squares_map(x, y, ridge=1e-3)
    phi = np.vstack([x, np.ones((1, 300))])
    gram = phi @ phi.T
    full = np.linalg.solve(gram + 1e-3 * np.trace(gram) / 41 * np.eye(41), phi @ y.T).T
    np.testing.assert_allclose(w, full, rtol=1e-12, atol=1e-14)
    assert w.shape == (9, 41) and not np.any(w[:, 6:40])
    np.testing.assert_allclose(apply_affine(w, x), full[:, :-1] @ x + full[:, -1:], rtol=1e-12)
