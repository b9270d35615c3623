"""Many users: more users than models, one copy of each model's inputs, a bounded memory."""

from __future__ import annotations

import logging
import tracemalloc

import numpy as np
import pytest

from common.assets.source import AssetSource
from common.run import budget
from common.run.driver import build_parties, run_experiment
from common.run.session import Session
from common.run.sources import SyntheticSource
from conf import settings


@pytest.fixture(scope="module")
def many(cache_dir):
    """24 users over the embedded zoo's 8 models, and the source of their inputs."""
    run = settings(
        f"cache_dir={cache_dir}", "users.count=24", "experiment.rounds=3",
        "experiment.progress=false",
    )  # fmt: skip
    return run, AssetSource(run)


def test_users_of_one_model_share_one_copy_of_its_inputs(many):
    run, source = many
    problem = source.problem()
    assert problem.users[0] is problem.users[8] is problem.users[16]
    assert problem.users[0] is not problem.users[1]
    _, users = build_parties(problem, run)
    assert users[0].prepared is users[8].prepared  # identity, not equality
    assert users[0].prepared.derived["y_bar"] is users[16].prepared.derived["y_bar"]
    # what a user holds of its own differs: its channel
    assert not np.array_equal(users[0].h_block, users[8].h_block)


def test_a_count_over_the_models_equals_the_explicit_list_of_the_same_users(many):
    run, source = many
    listed = run.replace(models=run.users.models)  # the 24 names, written out
    assert listed.users.models == run.users.models and listed.identity() == run.identity()
    first = run_experiment(source.problem(), run)
    second = run_experiment(AssetSource(listed).problem(), listed)
    assert first.results.user_model.tolist() == list(run.users.models)
    np.testing.assert_array_equal(first.results.accuracy, second.results.accuracy)
    np.testing.assert_array_equal(first.precoders["F"], second.precoders["F"])


def test_the_memory_of_many_users_is_one_copy_per_model_plus_each_users_own(cache_dir):
    run = settings(
        f"cache_dir={cache_dir}", "users.count=64", "experiment.rounds=2",
        "experiment.progress=false",
    )  # fmt: skip
    source = AssetSource(run)
    problem = source.problem()
    dims = [user.pilots.shape[1] for user in problem.users]
    n, n_test, ap_dim = problem.n_pilots, problem.users[0].test.shape[0], problem.ap.pilots.shape[1]
    shared = budget.estimate(run, n, n_test, ap_dim, dims, models=run.users.models)
    per_user = budget.estimate(run, n, n_test, ap_dim, dims)  # as if every user had its own
    tracemalloc.start()
    try:
        run_experiment(problem, run)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * shared.total  # within the bound of one copy per model
    assert peak < per_user.total / 3  # far below one copy per user


def test_a_user_never_drawn_fits_its_equalizer_on_the_final_pilots_at_test_time():
    """Partial participation with many users: a user the AP never trained with gets the
    final precoder's pilots with its test transmission (counted), and is evaluated."""
    from common.parties.protocol import AlignRefit
    from common.run.session import Session
    from common.run.sources import SyntheticSource
    from tests.synthetic import settings_for

    source = SyntheticSource(n=200, n_test=80, ap_dim=12, user_dims=(14, 9, 10, 11, 12, 13))
    problem = source.problem()
    run = settings_for(problem, rounds=2, participation=0.3, seed=3)
    ap, users = build_parties(problem, run)
    session = Session(ap, run, problem.ap)
    drawn: dict[int, int] = {}
    for rnd in (1, 2):
        downlink = session.train_downlink(rnd, [u.index for u in users])
        for k in downlink:
            drawn[k] = drawn.get(k, 0) + 1
        session.finish_train_round(rnd, {k: users[k].train(m) for k, m in downlink.items()}, {})
    test = session.test_downlink([u.index for u in users])
    refit = {k for k, message in test.items() if isinstance(message, AlignRefit)}
    assert refit == set(range(6)) - set(drawn) and refit  # exactly the users never drawn
    evaluations = {k: users[k].evaluate(message) for k, message in test.items()}
    session.finish_evaluation(evaluations, {})
    outcome = session.outcome()
    assert len(outcome.results) == 6 and outcome.failures.empty
    # the pilots they got at test time are counted: as many bytes as a training round's
    per_user = outcome.results.set_index("user").bytes_down
    once = next(k for k, count in drawn.items() if count == 1)
    assert all(per_user[k] == per_user[once] for k in refit)


def _synthetic_run(users: int, n: int = 2000, **changes):
    """A problem of ``users`` users over 4 synthetic models (user k has model k mod 4)."""
    from common.run.sources import AlignmentProblem, SyntheticSource
    from tests.synthetic import settings_for

    problem = SyntheticSource(n=n, n_test=50, ap_dim=12, user_dims=(14, 9, 10, 11)).problem()
    many = AlignmentProblem(problem.ap, tuple(problem.users[k % 4] for k in range(users)))
    return many, settings_for(many, **changes)


def test_the_ap_keeps_a_local_step_per_user_not_its_uplink():
    """A round of K users never holds K uplinks (``Nt·u × n`` each): the AP solves each
    user's local F step as its reply arrives. The peak grows by far less than an uplink
    per extra user."""
    peaks = {}
    for users in (8, 40):
        problem, run = _synthetic_run(users, rounds=2)
        uplink_bytes = run.link.tx_dim * problem.n_pilots * 16
        tracemalloc.start()
        try:
            run_experiment(problem, run)
            _, peaks[users] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    per_extra_user = (peaks[40] - peaks[8]) / 32
    assert per_extra_user < uplink_bytes / 4, (per_extra_user, uplink_bytes)


def test_replies_handed_over_as_they_come_equal_replies_handed_over_at_once():
    """``take_train_reply`` one by one and ``finish_train_round`` with every reply give the
    same precoders, history and failures, a rejected (non-finite) uplink included."""
    import dataclasses

    from common.run.session import Session

    outcomes = []
    for streamed in (False, True):
        problem, run = _synthetic_run(6, n=300, rounds=3, seed=5)
        ap, users = build_parties(problem, run)
        session = Session(ap, run, problem.ap)
        for rnd in session.rounds:
            downlink = session.train_downlink(rnd, [u.index for u in users])
            replies = {k: users[k].train(m) for k, m in downlink.items()}
            if rnd == 2:  # user 3's uplink is poisoned: rejected, recorded as a failure
                bad = replies[3].message.a_y.copy()
                bad[0, 0] = np.nan
                message = dataclasses.replace(replies[3].message, a_y=bad)
                replies[3] = dataclasses.replace(replies[3], message=message)
            if streamed:
                for k in sorted(replies, reverse=True):  # in any order
                    session.take_train_reply(rnd, k, replies[k])
                session.finish_train_round(rnd, {}, {})
            else:
                session.finish_train_round(rnd, replies, {})
        outcomes.append(session)
    at_once, streamed = outcomes
    for name, value in at_once.ap.precoders().items():
        np.testing.assert_array_equal(value, streamed.ap.precoders()[name])
    assert at_once.failures == streamed.failures and len(at_once.failures) == 1
    assert "uplink rejected" in at_once.failures[0]["reason"]
    assert [r["objective"] for r in at_once.history] == [r["objective"] for r in streamed.history]


STALE_SOURCE = SyntheticSource(n=200, n_test=80, ap_dim=12, user_dims=(14, 9, 10, 11, 8, 13))


def test_users_whose_equalizer_is_from_the_first_half_of_the_rounds_are_named(caplog):
    """Under partial participation, a user drawn only early decodes the final precoder
    with an equalizer fitted to an old one: the run names such users."""
    from tests.synthetic import settings_for

    problem, users = STALE_SOURCE.problem(), range(STALE_SOURCE.num_users)
    run = settings_for(problem, rounds=6, seed=3).replace(participation=0.2)
    session = Session(build_parties(problem, run)[0], run, STALE_SOURCE.ap_inputs())
    last = {}
    for rnd in range(1, 7):
        last.update(dict.fromkeys(session.participants(rnd, users), rnd))
    stale = sorted(k for k, rnd in last.items() if rnd <= 3)
    assert stale  # the draws of this seed leave some users behind
    with caplog.at_level(logging.WARNING, logger="common.run.session"):
        run_experiment(problem, run)
    warned = [r.getMessage() for r in caplog.records if "last fitted" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].startswith(f"{len(stale)} user(s) ({', '.join(map(str, stale))})")
