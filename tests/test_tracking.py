"""The deployment phase (tracking.*): a channel that moves, and the policies that keep the
alignment on track; the same numbers in process and through the Flower transport, and
after a resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.app import MessageType

from clients.client_app import make_client_app
from common.maths import admm
from common.run.driver import build_parties, run_experiment, run_parties
from common.run.results import RunOutcome
from common.run.session import Session
from common.run.settings import ConfigError
from server.strategy import AlignmentStrategy
from server.sweep import WriteTo, run_point
from tests.synthetic import settings_for
from tests.test_apps import SOURCE, _client_grid, _drive
from tests.test_resume import Killed

PROBLEM = SOURCE.problem()


def _settings(policy: str = "none", speed: float = 0.0, **changes):
    """Federated, 4 rounds, TDL-A at 3.5 GHz, 6 slots of 2 ms from the training channel."""
    return settings_for(
        PROBLEM,
        rounds=4,
        channel_uses=2,
        seed=5,
        **{
            "communication.model": "tdl",
            "communication.speed": speed,
            "tracking.slots": 6,
            "tracking.slot_duration": 2e-3,
            "tracking.policy": policy,
            **changes,
        },
    )


def _slots(outcome: RunOutcome) -> pd.Series:
    return outcome.tracking.groupby("slot").accuracy.mean()


@pytest.mark.parametrize("policy", ["none", "equalizer", "full"])
def test_a_static_channel_leaves_every_slot_as_the_evaluation(policy):
    """Speed 0: every slot decodes over the training channel with the evaluation's noise;
    `none` and an equalizer refresh on all pilots give the evaluation's accuracy in every
    slot; `full` goes on training (warm-started), so it moves by at most 1 pp."""
    outcome = run_experiment(PROBLEM, _settings(policy, **{"tracking.every": 2}))
    evaluated = outcome.results.set_index("user").accuracy
    per_user = outcome.tracking.pivot(index="slot", columns="user", values="accuracy")
    assert len(per_user) == 6
    if policy == "full":
        assert (per_user.mean(axis=1) - evaluated.mean()).abs().max() <= 0.01
    else:
        for user in evaluated.index:
            assert (per_user[user] == evaluated[user]).all(), user


def test_an_equalizer_refresh_at_speed_0_on_all_pilots_is_the_trained_equalizer():
    ap, users = build_parties(PROBLEM, _settings("none"))
    run_parties(ap, users, _settings("none"), PROBLEM)
    trained = [u.g.copy() for u in users]
    ap, refreshed = build_parties(PROBLEM, _settings("equalizer"))
    run_parties(ap, refreshed, _settings("equalizer"), PROBLEM)
    for before, user in zip(trained, refreshed, strict=True):
        np.testing.assert_array_equal(user.g, before)


def test_the_channel_moves_and_a_refresh_brings_the_accuracy_back():
    """120 km/h at 3.5 GHz (f_D = 389 Hz): 2 ms is past the coherence time, so the trained
    alignment decays; an equalizer refresh opening slots 1, 4 restores them to within 2 pp
    of the evaluation, while the slots between decay again."""
    none = _slots(run_experiment(PROBLEM, _settings("none", speed=33.3)))
    fresh = _slots(
        run_experiment(PROBLEM, _settings("equalizer", speed=33.3, **{"tracking.every": 3}))
    )
    evaluated = none.iloc[0]  # slot 1 is the training channel (train_time 0)
    assert none.iloc[1:].max() < evaluated - 0.1
    assert abs(fresh.loc[4] - evaluated) <= 0.02
    assert fresh.loc[[2, 3, 5, 6]].max() < evaluated - 0.1


def test_full_with_enough_rounds_recovers_training_afresh_on_the_slot_channel():
    """30 warm-started rounds at slot 3 against 30 rounds from scratch with every user's
    training channel replaced by its slot-3 channel: within 1 pp."""
    moved = _settings("full", speed=33.3, **{"tracking.every": 2, "tracking.rounds": 30})
    moved = moved.replace(rounds=30)
    full = _slots(run_experiment(PROBLEM, moved))
    when = moved.tracking.time(3)
    afresh = moved.replace(**{"tracking.slots": 0, "communication.speed": 0.0})
    ap, users = build_parties(PROBLEM, afresh)
    for user in users:
        mover = build_parties(PROBLEM, moved)[1][user.index]
        channel = mover.channels_at(when, 3)
        user.h_block = user.h_known = user.h_test = channel.train
    outcome = run_parties(ap, users, afresh, PROBLEM)
    assert abs(full.loc[3] - outcome.results.accuracy.mean()) <= 0.01
    assert full.loc[2] < full.loc[3] - 0.1  # slot 2 decays: no refresh opens it


def test_the_overhead_counts_each_refresh():
    """Equalizer: p pilots per refresh to each user, nothing up; full: n pilots down and
    one uplink per round."""
    eq = run_experiment(
        PROBLEM, _settings("equalizer", **{"tracking.every": 4, "tracking.pilots": 50})
    ).tracking
    n, tx = 200, 2 * 4  # SOURCE's pilots, Nt·u
    one = eq[eq.user == 0].set_index("slot")
    assert one.refreshed.tolist() == [1, 0, 0, 0, 1, 0]
    assert one.overhead_pilots.tolist() == [50] * 4 + [100] * 2
    assert one.overhead_bytes_down.tolist() == [50 * tx * 16] * 4 + [100 * tx * 16] * 2
    assert (one.overhead_bytes_up == 0).all() and (one.overhead_rounds == 0).all()
    assert one.overhead_channel_uses.tolist() == [50 * 2] * 4 + [100 * 2] * 2
    full = run_experiment(
        PROBLEM, _settings("full", **{"tracking.every": 3, "tracking.rounds": 2})
    ).tracking
    one = full[full.user == 0].set_index("slot")
    assert one.overhead_rounds.tolist() == [2] * 3 + [4] * 3
    assert one.overhead_pilots.tolist() == [2 * n] * 3 + [4 * n] * 3
    uplink = (tx * tx + tx * n) * 16  # Aᴴ A and Aᴴ Ȳ
    assert one.overhead_bytes_up.tolist() == [2 * uplink] * 3 + [4 * uplink] * 3


def test_a_partial_equalizer_refresh_fits_on_the_drawn_pilots():
    """p < n: the last slot's refresh re-sends p of the n pilot columns the user trained
    on, and its G_k is the MMSE fit of those columns of Ȳ_k to them received over the
    slot's channel; the columns are the same in every run."""
    settings = _settings("equalizer", speed=33.3, **{"tracking.pilots": 40})
    ap, users = build_parties(PROBLEM, settings)
    sent = {}
    original = Session.slot_downlink

    def spy(self, slot, users):
        sent[slot] = original(self, slot, users)
        return sent[slot]

    Session.slot_downlink = spy
    try:
        outcome = run_parties(ap, users, settings, PROBLEM)
    finally:
        Session.slot_downlink = original
    assert (outcome.tracking.overhead_pilots == 40 * outcome.tracking.slot).all()
    last = sent[6][1]
    columns = last.columns
    assert columns.size == 40 and (np.diff(columns) > 0).all()
    user = users[1]
    channel = user.channels_at(settings.tracking.time(6), 6).train
    received = channel @ last.pilots
    target = user._y_bar[:, columns]
    moments = admm.ReceivedMoments.of(target, received)
    expected = admm.equalizer(moments, 40 * user.noise_variance)
    np.testing.assert_allclose(user.g, expected, rtol=1e-10)
    again = run_experiment(PROBLEM, settings).tracking
    pd.testing.assert_frame_equal(outcome.tracking, again, check_exact=True)


@pytest.mark.usefixtures("task_identity")
def test_the_flower_transport_gives_the_in_process_numbers_in_lockstep():
    """Three deployment phases in one strategy's messages (their plans equal): each equals
    its run alone in process, slot by slot, overhead included."""
    plan = {"tracking.every": 2, "tracking.rounds": 2}
    points = [
        _settings("full", speed=8.3, **plan),
        _settings("full", speed=8.3, **plan).replace(**{"strategy.name": "multi_link"}),
        _settings("full", speed=8.3, **plan).replace(
            **{"communication.model": "cdl", "communication.profile": "C"}, participation=0.7
        ),
    ]
    problem, inputs = SOURCE.problem(), SOURCE.ap_inputs()
    sessions = [Session(build_parties(problem, p)[0], p, inputs) for p in points]
    strategy = AlignmentStrategy(sessions, node_wait_timeout=1.0)
    grid = _client_grid(make_client_app(None, SOURCE))
    _drive(strategy, grid)
    strategy.deploy(grid, 60.0)
    slots = [m for m in grid.sent if m.metadata.message_type == MessageType.EVALUATE]
    assert len(slots) == 3 * (1 + 6)  # one message per user for the evaluation and each slot
    for point, session in zip(points, sessions, strict=True):
        alone = run_experiment(problem, point)
        pd.testing.assert_frame_equal(session.outcome().tracking, alone.tracking, check_exact=True)
        for name, value in session.ap.precoders().items():
            np.testing.assert_allclose(value, alone.precoders[name], rtol=1e-10)


def _kind(message) -> str:
    """The protocol kind of a message's first entry ('' for a node query)."""
    return str(message.content["config.0"]["kind"]) if "config.0" in message.content else ""


def _killed_at_slot(app, slot: int):
    """A grid whose AP 'dies' when it sends the transmissions of deployment ``slot``."""
    grid = _client_grid(app)
    send = grid.send_and_receive

    def send_and_receive(messages, *, timeout=None):
        messages = list(messages)
        if {(_kind(m), m.metadata.group_id) for m in messages} == {("align_slot", str(slot))}:
            raise Killed(f"killed in slot {slot}")
        return send(messages, timeout=timeout)

    grid.send_and_receive = send_and_receive
    return grid


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize(
    ("policy", "killed", "options"),
    [
        ("equalizer", 4, {"tracking.pilots": 60}),  # a rebuild on the slot-3 refresh's 60
        ("full", 4, {"consensus.participation": 0.7}),
        ("equalizer", 1, {"consensus.participation": 0.7}),  # after the evaluation
    ],
)
def test_a_run_killed_in_its_deployment_phase_resumes_at_its_next_slot(
    tmp_path, policy, killed, options
):
    """Killed when sending slot ``killed``: the resumed run sends that slot and the later
    ones only (its users rebuild their equalizers from the checkpoint's pilots) and ends
    with the uninterrupted tables, to the last bit."""
    run = _settings(policy, speed=8.3, **{"tracking.every": 2, **options})
    run_point(_client_grid(make_client_app(None, SOURCE)), run, WriteTo(tmp_path / "whole"), SOURCE)
    whole = RunOutcome.load(tmp_path / "whole")
    folder = tmp_path / "killed"
    app = make_client_app(None, SOURCE)
    with pytest.raises(Killed):
        run_point(_killed_at_slot(app, killed), run, WriteTo(folder), SOURCE)
    slots_kept = folder / "tracking.csv"
    assert (pd.read_csv(slots_kept).slot.max() if killed > 1 else 0) == killed - 1
    grid = _client_grid(make_client_app(None, SOURCE))
    run_point(grid, run.replace(resume=True), WriteTo(folder), SOURCE)
    sent = {(_kind(m), int(m.metadata.group_id)) for m in grid.sent if _kind(m)}
    # no training round, no evaluation: the slots from the killed one (and full refreshes)
    expected = {("align_slot", s) for s in range(killed, 7)}
    if policy == "full":
        expected |= {("align_track", s) for s in range(killed, 7) if s % 2 == 1}
    assert sent == expected
    resumed = RunOutcome.load(folder)
    pd.testing.assert_frame_equal(resumed.tracking, whole.tracking, check_exact=True)
    pd.testing.assert_frame_equal(
        resumed.results.drop(columns="wall_time_s"),
        whole.results.drop(columns="wall_time_s"),
        check_exact=True,
    )
    assert resumed.history.objective.tolist() == whole.history.objective.tolist()


@pytest.mark.parametrize(
    ("changes", "key", "says"),
    [
        ({"tracking.every": 0}, "tracking.every", "whole number"),
        ({"tracking.pilots": 0}, "tracking.pilots", "whole number"),
        ({"tracking.policy": "often"}, "tracking.policy", "none, equalizer, full"),
        ({"tracking.slots": -1}, "tracking.slots", "whole number"),
        ({"tracking.slot_duration": 0.0}, "tracking.slot_duration", "> 0"),
        ({"tracking.train_time": -1.0}, "tracking.train_time", "[0, inf) seconds"),
        ({"communication.speed": -3.0}, "communication.speed", "[0, 1000] m/s"),
        ({"strategy.name": "first_k"}, "tracking.slots", "needs an ADMM method"),
        ({"csi.ageing": 0.9}, "csi.ageing", "must be 1 with a deployment phase"),
        ({"tracking.slots": 100_001}, "tracking.slots", "0..100,000"),
    ],
)
def test_bad_tracking_settings_are_refused_by_name(changes, key, says):
    with pytest.raises(ConfigError) as refused:
        _settings("equalizer", **changes)
    assert key in str(refused.value) and says in str(refused.value)


def test_more_refresh_pilots_than_the_pilot_set_are_refused_before_any_round():
    settings = _settings("equalizer", **{"tracking.pilots": 201})
    with pytest.raises(ConfigError, match=r"'tracking.pilots' = 201 is invalid.*200 pilots"):
        run_experiment(PROBLEM, settings)


def test_the_deployment_keys_are_left_out_of_identities_at_their_defaults():
    base = settings_for(PROBLEM)
    assert "tracking" not in base.identity()
    assert "speed" not in base.replace(**{"communication.model": "tdl"}).identity()["communication"]
    assert _settings("full").identity()["tracking"] == {
        "slots": 6,
        "slot_duration": 2e-3,
        "policy": "full",
    }


@pytest.mark.slow
def test_the_ray_simulation_gives_the_in_process_deployment_phase():
    """Through Flower's simulation engine (Ray, a ClientApp process per node): the slots'
    table, refreshes and overhead included, equals the in-process run's."""
    from launch.simulation import simulate

    run = _settings("full", speed=8.3, **{"tracking.every": 2, "tracking.rounds": 2})
    run = run.replace(**{"tracking.slots": 4})
    outcome = simulate(run, SOURCE)
    reference = run_experiment(PROBLEM, run)
    pd.testing.assert_frame_equal(outcome.tracking, reference.tracking, check_exact=True)
    assert outcome.results.accuracy.tolist() == reference.results.accuracy.tolist()


@pytest.mark.parametrize("model", ["tdl", "cdl", "rayleigh"])
def test_a_user_channel_at_time_0_is_its_training_channel_and_moves_only_when_3gpp(model):
    run = settings_for(PROBLEM, channel_uses=2, seed=5, **{"communication.model": model})
    if model != "rayleigh":
        run = run.replace(**{"tracking.slots": 2, "communication.speed": 30.0})
    user = build_parties(PROBLEM, run)[1][1]
    np.testing.assert_array_equal(user.channels_at(0.0, 1).train, user.h_block)
    later = user.channels_at(0.05, 2).train
    if model == "rayleigh":  # static: the same channel at any time
        np.testing.assert_array_equal(later, user.h_block)
    else:  # 50 ms at 30 m/s, 3.5 GHz: f_D·Δt = 17.5, decorrelated
        assert np.linalg.norm(later - user.h_block) > 0.5 * np.linalg.norm(user.h_block)


def test_speed_is_refused_where_no_deployment_phase_reads_it():
    from conf import settings

    with pytest.raises(ConfigError, match=r"communication.speed.*tracking.slots=1 or more"):
        settings("channel=tdl", "communication.speed=8.3")
    with pytest.raises(ConfigError, match=r"tracking.rounds.*tracking.policy=full"):
        settings("tracking=equalizer", "tracking.rounds=3")


def test_a_clustered_run_keeps_its_groups_through_the_refresh_rounds():
    """k-means regroups every training round, never in a `full` refresh: the groups after
    the deployment phase are those after training."""
    kmeans = {
        "strategy.name": "clustered",
        "strategy.grouping": "kmeans",
        "strategy.clusters": 2,
        "strategy.regroup_every": 1,
    }
    run = _settings("full", speed=8.3, **kmeans, **{"tracking.rounds": 3})
    ap, users = build_parties(PROBLEM, run)
    outcome = run_parties(ap, users, run, PROBLEM)
    trained = run_experiment(PROBLEM, run.replace(**{"tracking.slots": 0}))
    assert outcome.results.group.tolist() == trained.results.group.tolist()
    assert [ap.groups()[k] for k in sorted(ap.groups())] == trained.results.group.tolist()
    assert outcome.tracking.accuracy.min() > 0.5


def test_the_printed_slot_table_keeps_the_first_the_worst_and_the_last_slot():
    from common.run.reporting import slot_table

    tracking = run_experiment(PROBLEM, _settings("none", speed=33.3)).tracking
    per_slot = tracking.groupby("slot").accuracy.mean()
    text = slot_table(tracking, shown=2)
    rows = [line.split()[0] for line in text.splitlines()[2:]]
    assert rows == [str(s) for s in sorted({1, 4, int(per_slot.idxmin()), 6})]
    assert f"worst: slot {per_slot.idxmin()}, {per_slot.min():.4f}" in text


def test_a_deployment_phase_that_cannot_show_much_is_warned_of(caplog):
    run_experiment(PROBLEM, _settings("equalizer", **{"tracking.pilots": 5}))
    said = caplog.text
    assert "see a static channel (communication.speed=0)" in said
    assert "tracking.pilots=5 is fewer than the equalizer's Nr·u = 8 unknowns per row" in said
