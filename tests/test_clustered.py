"""The clustered method: its two ends are the federated and multi-link methods, its groups
are deterministic, its streams are counted once per group, and it resumes and runs
through Flower with the same numbers."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from common.parties.grouping import cluster, nearest, relabel
from common.parties.ledger import DOWN, UP, Ledger
from common.parties.protocol import AlignPilots
from common.run.checkpoint import Checkpoint
from common.run.driver import build_parties, run_experiment
from common.run.results import STREAM_COLUMNS
from common.run.settings import ConfigError
from common.run.sources import SyntheticSource
from conf import settings
from tests.synthetic import settings_for

SOURCE = SyntheticSource(n=200, n_test=80, ap_dim=12, user_dims=(14, 9, 10, 11, 8, 13))
K = SOURCE.num_users


def _run(**changes):
    problem = SOURCE.problem()
    base = settings_for(problem, rounds=6, channel_uses=2, seed=3)
    return run_experiment(problem, base.replace(**changes))


def _clustered(**changes):
    return _run(**{"strategy.name": "clustered", **changes})


def _assert_same_run(got, want, names):
    for mine, theirs in names:
        np.testing.assert_allclose(got.precoders[mine], want.precoders[theirs], rtol=0, atol=1e-10)
    assert got.results.accuracy.tolist() == want.results.accuracy.tolist()
    np.testing.assert_allclose(got.results.mse, want.results.mse, rtol=1e-10)
    for column in ("power", "primal_residual", "objective"):
        np.testing.assert_allclose(got.history[column], want.history[column], rtol=1e-10)
    for column in ("bytes_down", "bytes_up", "stream_bytes_down", "channel_uses_down"):
        assert got.results[column].tolist() == want.results[column].tolist(), column


@pytest.mark.parametrize("participation", [1.0, 0.5])
def test_one_group_is_the_federated_method(participation):
    fed = _run(participation=participation)
    one = _clustered(
        participation=participation, **{"strategy.grouping": "given", "strategy.groups": [0] * K}
    )
    _assert_same_run(one, fed, [(f"{p}_0", p) for p in "FZU"])
    assert one.results.group.tolist() == [0] * K
    assert one.history.groups.tolist() == [1] * 6


@pytest.mark.parametrize("grouping", ["given", "model"])
def test_one_user_per_group_is_the_multi_link_method(grouping):
    multi = _run(**{"strategy.name": "multi_link", "consensus.participation": 0.5})
    labels = {"strategy.groups": list(range(K))} if grouping == "given" else {}
    each = _clustered(
        participation=0.5, **{"strategy.grouping": grouping, **labels}
    )  # synthetic users all run different models: model grouping makes K groups
    _assert_same_run(each, multi, [(f"{p}_{k}", f"{p}_{k}") for p in "FZU" for k in range(K)])
    assert each.results.group.tolist() == list(range(K)) == multi.results.group.tolist()


def test_groups_are_separate_consensus_problems_with_one_stream_each():
    labels = [0, 1, 0, 2, 1, 0]
    run = _clustered(**{"strategy.grouping": "given", "strategy.groups": labels})
    assert run.results.group.tolist() == labels
    # C streams per round: each stream is one F X̄ (Nt·u × n complex128) whatever its users
    tx = settings_for(SOURCE.problem(), channel_uses=2).link.tx_dim  # Nt·u
    stream = AlignPilots(signal=np.zeros((tx, 200), complex)).nbytes
    history = run.history
    assert history.streams_down.tolist() == [3] * 6
    assert history.stream_bytes_down.tolist() == [3 * stream] * 6
    assert history.bytes_down.tolist() == [K * stream] * 6  # counted per user, as before
    assert history.channel_uses_down.tolist() == [3 * 200 * 2] * 6  # streams × n × u
    results = run.results
    assert (results.streams_down == 18).all()
    assert (results.channel_uses_down == 18 * 200 * 2).all()
    test_stream = AlignPilots(signal=np.zeros((tx, 80), complex)).nbytes
    assert (results.stream_bytes_down == 18 * stream + 3 * test_stream).all()
    # the three precoders differ; the federated run's numbers are not any group's
    f = [run.precoders[f"F_{c}"] for c in range(3)]
    assert min(np.linalg.norm(a - b) for a, b in [(f[0], f[1]), (f[0], f[2]), (f[1], f[2])]) > 1e-3


@pytest.mark.parametrize("rule", ["mean", "median"])
def test_each_group_combines_its_own_members_local_precoders(rule):
    problem = SOURCE.problem()
    run = settings_for(problem, rounds=3, channel_uses=2, seed=3).replace(
        **{
            "strategy.name": "clustered",
            "strategy.grouping": "given",
            "strategy.groups": [0, 1, 0, 1, 1, 0],
            "consensus.aggregator": rule,
        }
    )
    ap, users = build_parties(problem, run)
    messages = ap.train_messages(list(range(K)))
    assert messages[0] is messages[2] is messages[5] and messages[1] is messages[3]
    assert messages[0] is not messages[1]
    replies = {k: ap.absorb(k, users[k].train(messages[k]).message) for k in range(K)}
    before = {c: (ap.states[c].u.copy()) for c in (0, 1)}
    ap.update(replies)
    for c, members in ((0, [0, 2, 5]), (1, [1, 3, 4])):
        combined = ap.aggregator([replies[k].f for k in members], [1.0] * 3)
        np.testing.assert_allclose(ap.states[c].f, combined, rtol=1e-12)
        if rule == "mean":
            np.testing.assert_allclose(combined, np.mean([replies[k].f for k in members], axis=0))
        np.testing.assert_allclose(ap.states[c].u, before[c] + ap.states[c].f - ap.states[c].z)


def _planted(seed=0, per=5, clusters=3, dim=(4, 6)):
    """Local precoders around ``clusters`` well-separated centres, users shuffled."""
    gen = np.random.default_rng(seed)
    centres = gen.normal(size=(clusters, *dim)) + 1j * gen.normal(size=(clusters, *dim))
    truth = gen.permutation(np.repeat(np.arange(clusters), per))
    noise = 0.01 * (gen.normal(size=(len(truth), *dim)) + 1j * gen.normal(size=(len(truth), *dim)))
    return {k: centres[c] + noise[k] for k, c in enumerate(truth)}, truth


def test_kmeans_finds_planted_groups_and_keeps_the_labels_it_can():
    precoders, truth = _planted()
    previous = {k: 0 for k in precoders}
    first, centres = cluster(precoders, 3, seed=11, previous=previous)
    again, centres_again = cluster(precoders, 3, seed=11, previous=previous)
    assert first == again  # deterministic per seed
    np.testing.assert_array_equal(centres, centres_again)
    pairs = {(first[k], int(t)) for k, t in enumerate(truth)}
    assert len(pairs) == 3  # the partition is the planted one (a bijection of labels)
    # each user's nearest centre is its own group's
    assert nearest(precoders, centres) == first
    # clustered again from labels already found: every user keeps its label
    assert cluster(precoders, 3, seed=5, previous=first)[0] == first
    # users the AP has not heard from keep their group
    heard = {k: f for k, f in precoders.items() if k < 10}
    partial, _ = cluster(heard, 3, seed=11, previous=first)
    assert all(partial[k] == first[k] for k in precoders if k >= 10)
    # too few distinct precoders for the groups: wait
    twins = {0: precoders[0], 1: precoders[0].copy()}
    assert cluster(twins, 2, seed=0, previous={0: 0, 1: 0}) is None


def test_relabel_maps_new_clusters_onto_the_groups_they_share_most_members_with():
    previous = {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2}
    found = {0: 2, 1: 2, 2: 0, 3: 0, 4: 1, 5: 1}
    assert relabel(found, previous, 3) == {2: 0, 0: 1, 1: 2}


def test_kmeans_groups_are_deterministic_and_regroup_on_schedule():
    options = {"strategy.grouping": "kmeans", "strategy.clusters": 3}
    first = _clustered(**options, **{"strategy.regroup_every": 2})
    second = _clustered(**options, **{"strategy.regroup_every": 2})
    assert first.results.group.tolist() == second.results.group.tolist()
    for name, value in first.precoders.items():
        np.testing.assert_array_equal(second.precoders[name], value)
    # round 1 is a federated round (one stream, the federated draw); then 3 groups
    fed = _run(rounds=1)
    assert first.history.streams_down.tolist() == [1, 3, 3, 3, 3, 3]
    np.testing.assert_allclose(first.history.power.iloc[0], fed.history.power.iloc[0], rtol=1e-12)
    assert int(first.precoders["clustered_after"]) in (5,)  # after rounds 1, 3, 5
    assert sorted(set(first.results.group)) == [0, 1, 2]


def test_a_grouping_that_cannot_be_made_is_refused_by_name():
    base = ("strategy=clustered", "users.count=8")
    cases = {
        (
            "strategy.clusters=0",
        ): "strategy.clusters must be a whole number from 1 to the number of users",
        (
            "strategy.clusters=9",
        ): "strategy.clusters must be at most the number of users (8), got 9",
        (
            "strategy.grouping=kmeans",
            "strategy.clusters=1",
        ): "strategy.grouping=kmeans needs strategy.clusters from 2 to 8",
        (
            "strategy.grouping=kmeans",
        ): "needs strategy.clusters from 2 to 8 (the number of users), got null",
        (
            "strategy.grouping=given",
            "strategy.groups=[0,1]",
        ): "one label per user (8), got 2 labels",
        ("strategy.grouping=given", "strategy.groups=[0,0,0,0,2,2,2,2]"): "no user in group(s) 1",
        (
            "strategy.grouping=given",
            "strategy.groups=[0,0,0,0,1,1,1,-1]",
        ): "strategy.groups[7] must be a group label, a whole number >= 0, got -1",
        (
            "strategy.grouping=kmeans",
            "strategy.clusters=2",
            "strategy.regroup_every=-1",
        ): "regroup_every must be a whole number >= 0, got -1",
        ("strategy.clusters=3",): "strategy.grouping=model makes 8 groups, got strategy.clusters=3",
        ("strategy.grouping=bogus",): "grouping must be one of model, kmeans, given, got 'bogus'",
    }
    for overrides, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            settings(*base, *overrides)
    assert (
        settings(
            *base, "strategy.grouping=given", "strategy.groups=[1,0,1,0,2,2,2,2]"
        ).strategy.groups[0]
        == 1
    )


def test_grouping_settings_are_refused_where_they_are_not_read():
    for keys, message in [
        (("strategy.clusters=2",), "it is read only with strategy=clustered"),
        (("strategy=clustered", "strategy.regroup_every=2"), "only with strategy.grouping=kmeans"),
        (("strategy=clustered", "strategy.groups=[0,1]"), "only with strategy.grouping=given"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            settings(*keys)


def test_older_settings_keep_their_identity():
    """The grouping keys at their defaults are left out of a run's identity, so points
    stored before the clustered method existed keep their names."""
    identity = settings("strategy=federated").identity()
    assert set(identity["strategy"]) == {"name", "rho"}
    for name in ("multi_link", "first_k"):  # every method's, not only the strategy section
        keys = settings(f"strategy={name}").keys()
        assert {k for k in keys if k.startswith("strategy.")} >= {"strategy.clusters"}
        flat = json.dumps(settings(f"strategy={name}").identity())
        assert "clusters" not in flat and "grouping" not in flat and "regroup" not in flat
    kmeans = settings("strategy=clustered", "strategy.grouping=kmeans", "strategy.clusters=2")
    assert kmeans.identity()["strategy"] == {
        "name": "clustered",
        "rho": 1.0,
        "grouping": "kmeans",
        "clusters": 2,
    }


def test_a_ledger_written_before_streams_counts_one_stream_per_user():
    old = [("train", 1, 0, DOWN, 100), ("train", 1, 1, DOWN, 100), ("train", 1, 0, UP, 40)]
    ledger = Ledger.from_rows(old)
    assert ledger.round_totals("train", 1)["streams_down"] == 2
    assert ledger.stream_totals() == {"streams_down": 2, "stream_bytes_down": 200}
    # a resumed run numbers them by its users' groups (federated: one stream)
    assert Ledger.from_rows(old, {0: 0, 1: 0}).round_totals("train", 1)["streams_down"] == 1
    with pytest.raises(ValueError, match="a ledger row has 5 or 6 entries, got 4"):
        Ledger.from_rows([("train", 1, 0, DOWN)])


def test_the_grouping_is_part_of_the_checkpoint(tmp_path):
    from common.run.session import Session, build_access_point

    problem = SOURCE.problem()
    run = settings_for(problem, rounds=6, channel_uses=2, seed=3).replace(
        **{"strategy.name": "clustered", "strategy.grouping": "kmeans", "strategy.clusters": 2}
    )
    ap = build_access_point(run, problem.ap, range(K))
    ap.labels = {k: k % 2 for k in range(K)}
    ap.clustered_after, ap._round = 1, 2
    Checkpoint(
        round=2,
        settings=run.to_json(),
        ap_state=ap.precoders(),
        history=[],
        failures=[],
        ledger=[],
        ap_metrics={},
        tracker="",
    ).write(tmp_path)
    fresh = build_access_point(run, problem.ap, range(K))
    session = Session(fresh, run, problem.ap)
    assert session.resume(tmp_path) == 2
    assert fresh.groups() == {k: k % 2 for k in range(K)}
    assert (fresh.clustered_after, fresh._round) == (1, 2)
    for name, value in ap.precoders().items():
        np.testing.assert_array_equal(fresh.precoders()[name], value)
    assert fresh.states[1] is not ap.states[1]


def _given_session(rounds):
    """An AP of two given groups (even and odd users), its users and its session."""
    from common.run.session import Session

    problem = SOURCE.problem()
    run = settings_for(problem, rounds=rounds, channel_uses=2, seed=3).replace(
        **{
            "strategy.name": "clustered",
            "strategy.grouping": "given",
            "strategy.groups": [0, 1] * 3,
        }
    )
    ap, users = build_parties(problem, run)
    return ap, users, Session(ap, run, problem.ap)


def test_a_user_moved_to_another_group_after_its_last_round_refits_at_test_time():
    from common.parties.protocol import AlignRefit, AlignTest

    ap, users, session = _given_session(rounds=2)
    for rnd in session.rounds:
        downlink = session.train_downlink(rnd, list(range(K)))
        replies = {k: users[k].train(downlink[k]) for k in downlink}
        session.finish_train_round(rnd, replies, {})
    ap.labels[4] = 1  # as a regrouping after user 4's last round would
    test = session.test_downlink(list(range(K)))
    assert [k for k, m in test.items() if isinstance(m, AlignRefit)] == [4]
    assert all(isinstance(test[k], AlignTest) for k in test if k != 4)
    np.testing.assert_array_equal(test[4].signal, test[1].signal)  # group 1's Z X̄_test
    np.testing.assert_array_equal(test[4].pilots, ap.states[1].f @ ap.x_bar)


def test_kmeans_under_partial_participation_places_users_heard_later_by_the_nearest_centre():
    run = _clustered(
        participation=0.5,
        rounds=8,
        **{"strategy.grouping": "kmeans", "strategy.clusters": 2},
    )
    assert run.precoders["assigned"].all()  # all replied at least once in 8 rounds at 0.5
    assert sorted(set(run.results.group)) == [0, 1]
    assert run.precoders["centroids"].shape[0] == 2
    # on the AP: round 1's repliers are clustered; a user first heard in round 2 joins the
    # group whose centre its local precoder is nearest to, and nobody else moves
    from common.parties.consensus import LocalPrecoder
    from common.run.session import build_access_point

    problem = SOURCE.problem()
    settings_ = settings_for(problem, rounds=4, channel_uses=2, seed=3).replace(
        **{"strategy.name": "clustered", "strategy.grouping": "kmeans", "strategy.clusters": 2}
    )
    ap = build_access_point(settings_, problem.ap, range(K))
    gen = np.random.default_rng(0)
    centres = [gen.normal(size=ap.shape) + 1j * gen.normal(size=ap.shape) for _ in range(2)]
    near = {0: 0, 1: 1, 2: 0, 3: 1}  # round 1: users 0-3, around two centres
    ap.update({k: LocalPrecoder(centres[c] + 0.01 * k) for k, c in near.items()})
    after_one = ap.groups()
    assert after_one[0] == after_one[2] != after_one[1] == after_one[3]
    assert after_one[4] == after_one[5] == 0 and ap.assigned == {0, 1, 2, 3}
    ap.update({5: LocalPrecoder(centres[1] - 0.02)})
    assert ap.groups()[5] == after_one[1] and ap.assigned == {0, 1, 2, 3, 5}
    assert {k: g for k, g in ap.groups().items() if k != 5} == {
        k: g for k, g in after_one.items() if k != 5
    }


def test_kmeans_with_more_groups_than_a_round_trains_with_is_refused():
    with pytest.raises(ConfigError, match=re.escape("allowed: 2 to 3")):
        settings(
            "strategy=clustered",
            "users.count=10",
            "strategy.grouping=kmeans",
            "strategy.clusters=4",
            "consensus.participation=0.3",
        )


def test_a_trimming_rule_runs_within_each_group_and_is_refused_when_no_group_can_trim():
    labels = {"strategy.grouping": "given", "strategy.groups": [0, 0, 0, 1, 1, 1]}
    trim = {"consensus.aggregator": "trimmed_mean", "consensus.trim_fraction": 0.34}
    run = _clustered(**labels, **trim)
    assert run.history.trimmed_per_end.tolist() == [2] * 6  # ⌊0.34·3⌋ = 1 in each group
    with pytest.raises(ConfigError, match="cuts no user of the 3 the smallest group"):
        settings_for(SOURCE.problem()).replace(
            **{"strategy.name": "clustered", **labels, **trim, "consensus.trim_fraction": 0.2}
        )


def test_users_refitting_in_one_group_share_one_stream():
    from common.parties.protocol import AlignRefit

    ap, _, session = _given_session(rounds=1)
    test = session.test_downlink(list(range(K)))  # nobody trained: everyone refits
    assert all(isinstance(m, AlignRefit) for m in test.values())
    assert test[0] is test[2] is test[4] and test[1] is test[3] is test[5]
    assert session.ledger.stream_totals()["stream_bytes_down"] == 2 * test[0].nbytes


def test_the_clusters_study_and_figure():
    from common.run import plots
    from common.run.study import StudyGrid, cluster_points

    points = cluster_points(settings(), StudyGrid())
    assert len(points) == 3 * 2 * (2 + 1 + 4)  # groups × K × (ends, by model, k-means)
    for p in points:
        wanted = settings(f"users.group={p.users.group}", "users.models=null").users.models
        assert set(p.users.models) == set(wanted)  # each group's own models, in turn
    assert {p.num_users for p in points} == {64, 256}
    frames = [
        _run(**{"strategy.name": "federated"}).results,
        _run(**{"strategy.name": "multi_link"}).results,
        _clustered(**{"strategy.grouping": "kmeans", "strategy.clusters": 2}).results,
    ]
    results = pd.concat(frames, ignore_index=True)
    new = plots.cluster_summary(results)
    # results written before streams were counted get them from their method
    old = results.drop(columns=list(STREAM_COLUMNS))
    backfilled = plots.cluster_summary(old[old.method != "clustered"])
    ends = new[new.method != "clustered"].reset_index(drop=True)
    pd.testing.assert_frame_equal(backfilled, ends)
    assert new.groups.tolist() == [2, 1, K]  # clustered, federated, multi_link
    fig = plots.draw_clusters(results)
    lines = {line.get_label(): tuple(line.get_xdata()) for line in fig.axes[0].get_lines()}
    assert lines[f"{results.user_group[0]}, K = {K}"] == (1, 2, K)
    assert "| clustered, k-means | 2 |" in plots.cluster_table(new)
