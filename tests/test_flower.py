"""The Flower simulation against the in-process driver, and fault tolerance."""

import numpy as np
import pytest

from common.run.driver import run_experiment
from common.run.reporting import write_tables
from common.run.sources import SyntheticSource
from conf import settings
from launch.simulation import simulate
from tests.flower_helpers import faulty_second_user

pytestmark = pytest.mark.slow

SOURCE = SyntheticSource(n=400, n_test=200, ap_dim=24, user_dims=(30, 17, 20))
MODELS = tuple(SOURCE.user_data(k).name for k in range(SOURCE.num_users))


def _settings(method: str, rounds: int = 4):
    return settings().replace(
        models=MODELS,
        **{"strategy.name": method},
        rounds=rounds,
        channel_uses=2,
        seed=7,
        progress=False,
    )


@pytest.mark.parametrize(
    ("method", "window"),  # messages in flight: four per actor, one at a time, all at once
    [("federated", None), ("multi_link", 1), ("first_k", 0), ("top_k", None), ("clustered", 1)],
)
def test_flower_simulation_matches_the_in_process_driver(method, window):
    settings = _settings(method).replace(**{"experiment.messages_in_flight": window})
    if method == "clustered":  # k-means after round 1, again after round 3
        settings = settings.replace(
            **{"strategy.grouping": "kmeans", "strategy.clusters": 2, "strategy.regroup_every": 2}
        )
    outcome = simulate(settings, SOURCE)
    reference = run_experiment(SOURCE.problem(), settings)
    expected = reference.precoders
    assert set(outcome.precoders) == set(expected)
    for name, value in expected.items():
        diff = np.linalg.norm(outcome.precoders[name] - value)
        assert diff <= 1e-6 * max(np.linalg.norm(value), 1e-12), name
    got, want = outcome.results, reference.results
    assert got.accuracy.tolist() == want.accuracy.tolist()
    np.testing.assert_allclose(got.mse, want.mse, rtol=1e-9)
    columns = ("bytes_down", "bytes_up", "messages", "rounds", "n_pilots", "group")
    for column in (*columns, "stream_bytes_down", "channel_uses_down"):
        assert got[column].tolist() == want[column].tolist(), column
    assert len(outcome.history) == reference.history.shape[0]
    assert (outcome.history.failures == 0).all()


def test_a_failing_user_is_counted_and_the_run_completes(tmp_path):
    settings = _settings("federated", rounds=4)
    outcome = simulate(settings, SOURCE, user_factory=faulty_second_user)
    history = outcome.history
    assert history.failures.tolist() == [0, 1, 1, 1]
    assert history.responded.tolist() == [3, 2, 2, 2]
    failures = outcome.failures
    assert failures.user.tolist() == [1, 1, 1]
    assert failures.reason.str.contains("lost its radio").all()
    # every user is still evaluated (user 1 with the equalizer of its last good round)
    assert outcome.results.user.tolist() == [0, 1, 2]
    assert outcome.results.accuracy.between(0, 1).all()
    written = write_tables(tmp_path, outcome.tables())
    assert {p.name for p in written} == {
        "results.parquet",
        "results.csv",
        "history.csv",
        "failures.csv",
    }


def test_a_failing_user_is_recorded_the_same_way_in_process():
    """The in-process transport drives the same session: the same failure rows."""
    settings = _settings("federated", rounds=4)
    problem = SOURCE.problem()
    from common.run.driver import build_parties, run_parties

    ap, users = build_parties(problem, settings)
    users[1] = faulty_second_user(1, SOURCE, settings)
    outcome = run_parties(ap, users, settings, problem)
    flower = simulate(settings, SOURCE, user_factory=faulty_second_user)
    assert outcome.history.failures.tolist() == flower.history.failures.tolist()
    assert outcome.failures.user.tolist() == flower.failures.user.tolist()
    assert outcome.failures.reason.str.contains("lost its radio").all()
    np.testing.assert_allclose(outcome.precoders["F"], flower.precoders["F"], rtol=1e-9)
    assert outcome.results.accuracy.tolist() == flower.results.accuracy.tolist()


MANY = SyntheticSource(n=300, n_test=100, ap_dim=16, user_dims=(18, 11, 14, 12, 17, 13, 15))


def test_fewer_supernodes_than_users_give_the_same_numbers_and_failures():
    """Three SuperNodes serve seven users (node p: users p, p + 3, ...), with partial
    participation and a failing user sharing its node with others: the same numbers and
    failure rows as in process, and one message per node per round."""
    models = tuple(MANY.user_data(k).name for k in range(MANY.num_users))
    run = settings().replace(
        models=models,
        rounds=4,
        channel_uses=2,
        seed=5,
        progress=False,
        **{"consensus.participation": 0.6, "experiment.supernodes": 3},
    )
    from common.run.driver import build_parties, run_parties

    problem = MANY.problem()
    ap, users = build_parties(problem, run)
    users[1] = faulty_second_user(1, MANY, run)
    reference = run_parties(ap, users, run, problem)
    outcome = simulate(run, MANY, user_factory=faulty_second_user)
    np.testing.assert_allclose(outcome.precoders["F"], reference.precoders["F"], rtol=1e-9)
    assert outcome.results.accuracy.tolist() == reference.results.accuracy.tolist()
    assert outcome.history.responded.tolist() == reference.history.responded.tolist()
    assert outcome.failures.user.tolist() == reference.failures.user.tolist()
    assert len(outcome.failures) > 0 and outcome.failures.user.eq(1).all()
    for column in ("bytes_down", "bytes_up", "messages", "rounds"):
        assert outcome.results[column].tolist() == reference.results[column].tolist(), column
