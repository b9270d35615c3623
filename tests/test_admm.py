"""Properties of the ADMM blocks and of whole federated/multi-link runs."""

import math

import numpy as np
import pytest
import scipy.linalg as sla

from common.maths import admm
from common.maths.compression import compress
from common.parties.consensus import FederatedAccessPoint
from common.run.driver import build_parties, run_experiment, run_parties
from tests.synthetic import link, make_problem, settings_for


def _crandn(rng, *shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def test_projection_is_the_euclidean_projection_onto_the_power_ball():
    rng = np.random.default_rng(0)
    power = 1.5
    for scale in (0.1, 1.0, 10.0):
        v = scale * _crandn(rng, 4, 6)
        p = admm.project_power(v, power)
        assert np.linalg.norm(p) ** 2 <= power + 1e-12
        if np.linalg.norm(v) ** 2 <= power:
            np.testing.assert_array_equal(p, v)
        # no feasible point is closer to v than p (variational inequality of the projection)
        for _ in range(200):
            q = _crandn(rng, 4, 6)
            q *= math.sqrt(power) * rng.uniform() ** (1 / 48) / np.linalg.norm(q)
            assert np.linalg.norm(v - p) <= np.linalg.norm(v - q) + 1e-12
            assert np.real(np.vdot(v - p, q - p)) <= 1e-9


def test_hermitian_sylvester_matches_scipy_and_has_tiny_residual():
    rng = np.random.default_rng(1)
    a_half = _crandn(rng, 8, 8)
    a = a_half.conj().T @ a_half
    b_half = _crandn(rng, 5, 5)
    b = b_half.conj().T @ b_half + np.eye(5)
    q = _crandn(rng, 8, 5)
    f = admm.HermitianSylvester(b).solve(a, q)
    np.testing.assert_allclose(f, sla.solve_sylvester(a, b, q), rtol=1e-9, atol=1e-10)
    assert np.linalg.norm(a @ f + f @ b - q) / np.linalg.norm(q) < 1e-12


def test_g_is_a_stationary_point_of_its_objective():
    rng = np.random.default_rng(2)
    y_bar, r = _crandn(rng, 7, 300), _crandn(rng, 8, 300)
    for noise_energy in (0.0, 3.0, 300.0):
        g = admm.g_step(y_bar, r, noise_energy)
        gradient = -(y_bar - g @ r) @ r.conj().T + noise_energy * g
        assert np.linalg.norm(gradient) / np.linalg.norm(y_bar @ r.conj().T) < 1e-10


def _run(method="federated", **link_changes):
    problem = make_problem()
    return problem, settings_for(
        problem, **{"strategy.name": method}, rounds=30, seed=3, **link_changes
    )


@pytest.mark.parametrize("method", ["federated", "multi_link"])
def test_every_local_f_solves_its_sylvester_equation_and_z_stays_feasible(method):
    problem, config = _run(method, channel_uses=2, power=0.5)
    ap, users = build_parties(problem, config)
    ids = [u.index for u in users]
    for _ in range(8):
        replies = {k: users[k].train(m).message for k, m in ap.train_messages(ids).items()}
        for k, reply in replies.items():
            state = ap.state if method == "federated" else ap.states[k]
            f_k = admm.local_f_step(ap.geometry, reply.a_gram, reply.a_y, state.z, state.u)
            residual = admm.sylvester_residual(
                ap.geometry, reply.a_gram, reply.a_y, state.z, state.u, f_k
            )
            assert residual < 1e-8
        ap.update(replies)
        states = [ap.state] if method == "federated" else list(ap.states.values())
        for s in states:
            assert np.linalg.norm(s.z) ** 2 <= 0.5 * (1 + 1e-12)


def test_federated_f_is_the_mean_of_the_local_solutions():
    problem, config = _run()
    ap, users = build_parties(problem, config)
    ids = [u.index for u in users]
    replies = {k: users[k].train(m).message for k, m in ap.train_messages(ids).items()}
    z, u = ap.state.z.copy(), ap.state.u.copy()
    local = [admm.local_f_step(ap.geometry, r.a_gram, r.a_y, z, u) for r in replies.values()]
    ap.update(replies)
    np.testing.assert_allclose(ap.state.f, np.mean(local, axis=0), rtol=1e-12)
    np.testing.assert_allclose(ap.state.z, admm.project_power(ap.state.f + u, 1.0), rtol=1e-12)
    np.testing.assert_allclose(ap.state.u, u + ap.state.f - ap.state.z, rtol=1e-12)


@pytest.mark.parametrize("method", ["federated", "multi_link"])
def test_power_constraint_holds_and_primal_residual_shrinks(method):
    problem, config = _run(method)
    history = run_experiment(problem, config).history
    assert (history.power <= config.link.power * (1 + 1e-9)).all()
    residual = history.primal_residual.to_numpy()
    peak = int(np.argmax(residual))
    assert residual[-1] < 0.1 * residual[peak]
    assert residual[-5:].max() < residual[peak]


def test_single_user_noise_free_alignment_reaches_least_squares():
    """Infinite SNR, square channels, Nt·u ≥ m: ADMM matches the unconstrained LS map."""
    problem = make_problem(ap_dim=16, user_dims=(20,), n=800, noise=0.5)  # m = 8
    config = settings_for(
        problem, rounds=30, antennas_tx=4, antennas_rx=4, channel_uses=2, snr_db=math.inf
    )
    ap, users = build_parties(problem, config)
    run_parties(ap, users, config, problem)
    user = users[0]
    x_bar, y_bar = ap.x_bar, user._y_bar
    aligned = user.g @ user.h_block @ ap.state.z @ x_bar
    mse_admm = np.mean(np.abs(y_bar - aligned) ** 2)
    t_ls = y_bar @ np.linalg.pinv(x_bar)
    mse_ls = np.mean(np.abs(y_bar - t_ls @ x_bar) ** 2)
    assert mse_admm <= 1.05 * mse_ls
    assert mse_admm >= mse_ls * (1 - 1e-9)  # LS is the lower bound


def test_ap_pilot_geometry_uses_whitened_pilots():
    problem = make_problem()
    ap = FederatedAccessPoint(
        problem.ap.pilots, problem.ap.test, link(), [0, 1], rounds=2, rho=1.0, seed=0
    )
    n = problem.n_pilots
    np.testing.assert_allclose(ap.geometry.b, np.eye(ap.x_bar.shape[0]) / n, atol=1e-12)
    np.testing.assert_allclose(ap.x_bar, ap.whitening.whiten(compress(problem.ap.pilots.T)))


def test_runs_are_deterministic_and_seed_dependent():
    problem, config = _run()
    a = run_experiment(problem, config)
    b = run_experiment(problem, config)
    np.testing.assert_array_equal(a.precoders["Z"], b.precoders["Z"])
    assert a.results.accuracy.tolist() == b.results.accuracy.tolist()
    c = run_experiment(problem, config.replace(seed=4))
    assert not np.allclose(a.precoders["Z"], c.precoders["Z"])


def test_objective_from_moments_equals_the_direct_computation():
    rng = np.random.default_rng(9)
    y_bar, r = _crandn(rng, 7, 200), _crandn(rng, 8, 200)
    moments = admm.ReceivedMoments.of(y_bar, r)
    g = admm.equalizer(moments, 5.0)
    objective, fit = admm.local_objective(
        float(np.vdot(y_bar, y_bar).real), moments, g, noise_energy=5.0
    )
    direct_fit = np.linalg.norm(y_bar - g @ r) ** 2
    assert fit == pytest.approx(direct_fit, rel=1e-10)
    assert objective == pytest.approx(direct_fit + 5.0 * np.linalg.norm(g) ** 2, rel=1e-10)


def test_the_power_projection_lands_on_the_ball_even_when_the_norm_overflows():
    from common.maths.admm import project_power

    v = np.full((4, 3), 1e200 + 1e200j)  # finite, but its squared norm overflows
    z = project_power(v, 2.0)
    assert np.isfinite(z).all()
    assert np.linalg.norm(z) == pytest.approx(np.sqrt(2.0), rel=1e-12)
    u = v / 1e200  # the same direction, at a representable scale
    np.testing.assert_allclose(z / np.linalg.norm(z), u / np.linalg.norm(u), rtol=1e-12)
