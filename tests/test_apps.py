"""The Flower strategy and ClientApp as units: no Ray, no SuperLink, replies built by hand.

A small fake grid stands in for Flower's: it answers the strategy's node queries
and hands back whatever replies a test prepares, so each test states exactly
which users answered, which failed and which stayed silent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from clients.client_app import default_user, make_client_app, state_key
from common.parties import protocol
from common.run.driver import build_parties, run_experiment
from common.run.results import RunOutcome
from common.run.session import Session
from common.run.sources import SyntheticSource
from server.nodes import UsersNotConnected
from server.strategy import AlignmentStrategy
from server.sweep import WriteTo, lockstep_batches
from tests.synthetic import settings_for
from transport import records
from transport.records import decode, encode

SOURCE = SyntheticSource(n=200, n_test=80, ap_dim=12, user_dims=(14, 9, 10))
NODES = {1001: 0, 1002: 1, 1003: 2}  # node id -> user index (partition-id)


@pytest.fixture(autouse=True)
def _run_identity(task_identity):
    """Every test here builds Flower messages."""


class FakeGrid:
    """Answers QUERY messages with each node's partition-id; other messages via ``answer``."""

    def __init__(self, nodes: dict[int, int], answer: Callable[[Message], Message | None]):
        self.nodes = nodes
        self.answer = answer
        self.sent: list[Message] = []
        self.timeouts: list[float | None] = []

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(self, messages: Iterable[Message], *, timeout=None) -> list[Message]:
        self.timeouts.append(timeout)
        replies = []
        for message in messages:
            self.sent.append(message)
            node = message.metadata.dst_node_id
            if message.metadata.message_type == MessageType.QUERY:
                identity = MetricRecord({"partition-id": self.nodes[node]})
                replies.append(Message(RecordDict({"metrics": identity}), reply_to=message))
            elif (reply := self.answer(message)) is not None:
                replies.append(reply)
        return replies


def _setup(method: str = "federated", rounds: int = 3):
    problem = SOURCE.problem()
    settings = settings_for(
        problem, **{"strategy.name": method}, rounds=rounds, channel_uses=2, seed=5
    )
    ap, users = build_parties(problem, settings)
    inputs = SOURCE.ap_inputs()
    strategy = AlignmentStrategy([Session(ap, settings, inputs)], node_wait_timeout=1.0)
    reference_ap, reference_users = build_parties(problem, settings)
    return strategy, users, (reference_ap, reference_users)


def _user_reply(users, message: Message) -> Message:
    """What a healthy ClientApp would send back, built by hand from the user object."""
    user = users[NODES[message.metadata.dst_node_id]]
    reply = user.train(decode(message.content))
    content = encode(reply.message, round=1)
    content[protocol.entry(protocol.METRICS, 0)] = MetricRecord(reply.metrics)
    return Message(content, reply_to=message)


def test_connect_maps_users_to_nodes_and_times_out_on_missing_users():
    strategy, _, _ = _setup()
    grid = FakeGrid(NODES, lambda m: None)
    assert strategy.connect(grid) == {0: 1001, 1: 1002, 2: 1003}
    lonely, _, _ = _setup()
    with pytest.raises(UsersNotConnected, match=r"users \[2\] did not connect"):
        lonely.connect(FakeGrid({1001: 0, 1002: 1}, lambda m: None))


def test_a_round_through_the_strategy_equals_the_in_process_round():
    strategy, users, (ref_ap, ref_users) = _setup()
    grid = FakeGrid(NODES, lambda m: _user_reply(users, m))
    messages = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid))
    assert sorted(m.metadata.dst_node_id for m in messages) == sorted(NODES)
    assert {m.metadata.message_type for m in messages} == {MessageType.TRAIN}
    expected = ref_ap.train_messages([0, 1, 2])[0].signal
    for message in messages:
        assert message.content["config.0"]["kind"] == "align_pilots"
        np.testing.assert_array_equal(decode(message.content).signal, expected)
    arrays, metrics = strategy.aggregate_train(1, grid.send_and_receive(messages))

    downlink = ref_ap.train_messages([0, 1, 2])
    ref_ap.update({k: ref_users[k].train(m).message for k, m in downlink.items()})
    np.testing.assert_allclose(arrays["0.F"].numpy(), ref_ap.state.f, rtol=1e-12)
    assert set(arrays.keys()) == {"0.F", "0.Z", "0.U"}
    assert metrics["0.responded"] == 3 and metrics["0.failures"] == 0
    assert strategy.sessions[0].failures == []


def test_error_replies_and_silent_users_are_recorded_and_left_out():
    strategy, users, (ref_ap, ref_users) = _setup()

    def answer(message: Message) -> Message | None:
        user = NODES[message.metadata.dst_node_id]
        if user == 1:
            return Message(
                Error(code=0, reason="Exception; Message: radio on fire"), reply_to=message
            )
        if user == 2:
            return None  # never answers
        return _user_reply(users, message)

    grid = FakeGrid(NODES, answer)
    messages = strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid)
    _, metrics = strategy.aggregate_train(1, grid.send_and_receive(messages))
    assert metrics["0.responded"] == 1 and metrics["0.failures"] == 2
    assert strategy.sessions[0].failures == [
        {"round": 1, "stage": "train", "user": 1, "reason": "radio on fire"},
        {"round": 1, "stage": "train", "user": 2, "reason": "no reply"},
    ]
    # the update used user 0 alone, exactly as the in-process AP fed with user 0 alone
    downlink = ref_ap.train_messages([0])
    ref_ap.update({0: ref_users[0].train(downlink[0]).message})
    np.testing.assert_allclose(strategy.sessions[0].ap.state.f, ref_ap.state.f, rtol=1e-12)
    row = strategy.sessions[0].history[-1]
    assert row["messages_down"] == 3 and row["messages_up"] == 1


def test_evaluation_happens_once_after_the_last_round():
    strategy, users, _ = _setup(rounds=2)
    grid = FakeGrid(NODES, lambda m: _user_reply(users, m))
    strategy.connect(grid)
    assert list(strategy.configure_evaluate(1, ArrayRecord(), ConfigRecord(), grid)) == []
    assert strategy.aggregate_evaluate(1, []) is None
    for rnd in (1, 2):
        messages = strategy.configure_train(rnd, ArrayRecord(), ConfigRecord(), grid)
        strategy.aggregate_train(rnd, grid.send_and_receive(messages))
    tests = list(strategy.configure_evaluate(2, ArrayRecord(), ConfigRecord(), grid))
    assert {m.metadata.message_type for m in tests} == {MessageType.EVALUATE}
    replies = []
    for message in tests:
        metrics = users[NODES[message.metadata.dst_node_id]].evaluate(decode(message.content))
        content = RecordDict({"config.0": ConfigRecord(), "metrics.0": MetricRecord(metrics)})
        replies.append(Message(content, reply_to=message))
    summary = strategy.aggregate_evaluate(2, replies[:2])  # user 2's reply is lost
    outcome = strategy.sessions[0].outcome()
    assert outcome.results.user.tolist() == [0, 1]
    assert summary["0.mean_accuracy"] == pytest.approx(outcome.results.accuracy.mean())
    assert outcome.failures.to_dict("records")[-1] == {
        "round": 2,
        "stage": "evaluate",
        "user": 2,
        "reason": "no reply",
    }
    assert len(outcome.history) == 2


# ---- the ClientApp -----------------------------------------------------------------------
def _context(partition: int) -> Context:
    return Context(
        run_id=7,
        node_id=2000 + partition,
        node_config={"partition-id": partition, "num-partitions": len(NODES)},
        state=RecordDict(),
        run_config={},
    )


def _to_client(content: RecordDict, message_type: str, node: int) -> Message:
    return Message(content, dst_node_id=node, message_type=message_type)


def test_client_app_trains_keeps_its_state_and_evaluates():
    problem = SOURCE.problem()
    run = settings_for(problem, **{"strategy.name": "federated"}, rounds=1, channel_uses=2, seed=5)
    ref_ap, ref_users = build_parties(problem, run)
    app = make_client_app(run, SOURCE)
    context = _context(1)

    query = app(_to_client(RecordDict(), MessageType.QUERY, 2001), context)
    assert query.content["metrics"]["partition-id"] == 1

    pilots = ref_ap.train_messages([1])[1]
    reply = app(_to_client(encode(pilots, round=1), MessageType.TRAIN, 2001), context)
    assert reply.content["config.0"]["kind"] == "align_uplink"
    uplink = decode(reply.content)
    expected = ref_users[1].train(pilots)
    np.testing.assert_allclose(uplink.a_y, expected.message.a_y, rtol=1e-12)
    assert reply.content["metrics.0"]["objective"] == pytest.approx(expected.metrics["objective"])
    # Flower's num-examples: the pilots a user trained on, the test samples it evaluated
    assert reply.content["metrics.0"]["num-examples"] == problem.n_pilots == 200
    saved = context.state[state_key(run, 1)]
    np.testing.assert_allclose(saved["g"].numpy(), ref_users[1].g, rtol=1e-12)

    test = ref_ap.test_messages([1])[1]
    result = app(_to_client(encode(test, round=1), MessageType.EVALUATE, 2001), context)
    assert result.content["metrics.0"]["accuracy"] == ref_users[1].evaluate(test)["accuracy"]
    assert result.content["metrics.0"]["num-examples"] == 80
    assert state_key(run, 1) not in context.state  # the point is over: its state is dropped


def test_client_app_answers_a_message_of_the_wrong_kind_with_an_error():
    problem = SOURCE.problem()
    run = settings_for(problem, **{"strategy.name": "federated"}, rounds=1, channel_uses=2, seed=5)
    app = make_client_app(run, SOURCE)
    ap, _ = build_parties(problem, run)
    wrong = encode(ap.test_messages([0])[0], round=1)  # a test transmission sent as training
    reply = app(_to_client(wrong, MessageType.TRAIN, 2000), _context(0))
    assert reply.content["config.0"]["error"] == (
        "TypeError: user 0 (AdmmUser) expects 'align_pilots' messages, got 'align_test'"
    )
    assert "arrays.0" not in reply.content
    reply = app(_to_client(wrong, MessageType.EVALUATE, 2000), _context(0))
    assert "no equalizer yet: train first" in reply.content["config.0"]["error"]


def test_client_app_follows_the_point_each_entry_names():
    """A node serving a sweep rebuilds its user per point and never mixes points' states."""
    problem = SOURCE.problem()
    first = settings_for(
        problem, **{"strategy.name": "federated"}, rounds=1, channel_uses=2, seed=5
    )
    second = first.replace(seed=6)
    app = make_client_app(None, SOURCE)  # bound to nothing: the messages say which run
    context = _context(0)
    for run in (first, second):
        ap, users = build_parties(problem, run)
        pilots = ap.train_messages([0])[0]
        content = encode(pilots, round=1, settings=run.to_json())
        reply = app(_to_client(content, MessageType.TRAIN, 2000), context)
        np.testing.assert_allclose(
            decode(reply.content).a_y, users[0].train(pilots).message.a_y, rtol=1e-12
        )
        assert [k for k in context.state if k.startswith("user_state.")] == [state_key(run, 0)]
    # a test transmission of the first point finds no equalizer learned in that point any more
    ap, _ = build_parties(problem, first)
    test = encode(ap.test_messages([0])[0], round=1, settings=first.to_json())
    reply = app(_to_client(test, MessageType.EVALUATE, 2000), context)
    assert "no equalizer yet" in reply.content["config.0"]["error"]


# ---- points in lockstep -------------------------------------------------------------------
def _client_grid(app) -> FakeGrid:
    """A grid whose nodes run ``app`` itself, each with its own context (no Ray)."""
    contexts = {node: _context(user) for node, user in NODES.items()}

    def answer(message: Message) -> Message:
        node = message.metadata.dst_node_id
        return app(_to_client(message.content, message.metadata.message_type, node), contexts[node])

    return FakeGrid(NODES, answer)


def _drive(strategy: AlignmentStrategy, grid: FakeGrid) -> None:
    """What ``Strategy.start`` does, without its logging set-up."""
    for rnd in range(1, strategy.last_round + 1):
        strategy.aggregate_train(
            rnd,
            grid.send_and_receive(
                strategy.configure_train(rnd, ArrayRecord(), ConfigRecord(), grid)
            ),
        )
        strategy.aggregate_evaluate(
            rnd,
            grid.send_and_receive(
                strategy.configure_evaluate(rnd, ArrayRecord(), ConfigRecord(), grid)
            ),
        )


def _sessions(points) -> list[Session]:
    """A fresh AP session per point over the synthetic source."""
    problem, inputs = SOURCE.problem(), SOURCE.ap_inputs()
    return [Session(build_parties(problem, c)[0], c, inputs) for c in points]


def test_points_in_lockstep_equal_each_point_run_alone():
    """Seven points share every message (one with partial participation and a faulty
    user, one on an aged Rician channel known through LS estimates, one on a 3GPP CDL-B
    channel, one whose users k-means regroups every round); each gets exactly its
    in-process numbers."""
    problem = SOURCE.problem()
    base = settings_for(problem, **{"strategy.name": "federated"}, rounds=3, channel_uses=2, seed=5)
    points = [
        base,
        base.replace(seed=9),
        base.replace(**{"strategy.name": "multi-link"}, snr_db=5.0),
        base.replace(
            participation=0.6,
            **{"faults.users": 1},
            **{"faults.kind": "random"},
            aggregator="median",
        ),
        base.replace(model="rician", k_factor=3.0, estimation="ls", ageing=0.9),
        base.replace(**{"communication.model": "cdl", "communication.profile": "B"}),
        base.replace(
            **{
                "strategy.name": "clustered",
                "strategy.grouping": "kmeans",
                "strategy.clusters": 2,
                "strategy.regroup_every": 1,
            }
        ),
    ]
    sessions = _sessions(points)
    strategy = AlignmentStrategy(sessions, node_wait_timeout=1.0)
    grid = _client_grid(make_client_app(None, SOURCE))
    _drive(strategy, grid)

    train = [m for m in grid.sent if m.metadata.message_type == MessageType.TRAIN]
    assert len(train) == 3 * 3  # one message per user and round, not one per point
    assert protocol.entry_indices(train[0].content)[:3] == [0, 1, 2]
    for point, session in zip(points, sessions, strict=True):
        alone = run_experiment(problem, point)
        outcome = session.outcome()
        precoders = session.ap.precoders()
        assert precoders.keys() == alone.precoders.keys()
        for name, value in precoders.items():
            np.testing.assert_allclose(value, alone.precoders[name], rtol=1e-10)
        np.testing.assert_allclose(outcome.results.accuracy, alone.results.accuracy, rtol=0)
        assert outcome.history.messages_down.tolist() == alone.history.messages_down.tolist()
        assert outcome.results.group.tolist() == alone.results.group.tolist()
        assert outcome.history.streams_down.tolist() == alone.history.streams_down.tolist()
        assert outcome.failures.empty


class AppGrid(FakeGrid):
    """A grid of simulated nodes (``partition-id`` p of ``len(nodes)``) that run ``app``
    for every message, its node queries too."""

    def __init__(self, app, nodes: dict[int, int]):
        contexts = {
            node: Context(
                run_id=7,
                node_id=node,
                node_config={"partition-id": p, "num-partitions": len(nodes)},
                state=RecordDict(),
                run_config={},
            )
            for node, p in nodes.items()
        }

        def answer(message: Message) -> Message:
            node = message.metadata.dst_node_id
            kind = message.metadata.message_type
            return app(_to_client(message.content, kind, node), contexts[node])

        super().__init__(nodes, answer)

    def send_and_receive(self, messages: Iterable[Message], *, timeout=None) -> list[Message]:
        messages = list(messages)
        self.sent += messages
        return [self.answer(message) for message in messages]


def test_a_node_serving_several_users_gets_one_message_a_round_and_the_same_numbers():
    """Two simulated SuperNodes serve three users (node 0: users 0 and 2) in two points
    run in lockstep: one message per node and round, and each point's in-process numbers
    (partial participation: ``tests/test_flower.py``)."""
    problem = SOURCE.problem()
    base = settings_for(problem, **{"strategy.name": "federated"}, rounds=3, channel_uses=2, seed=5)
    points = [base, base.replace(seed=8, aggregator="median")]
    sessions = _sessions(points)
    strategy = AlignmentStrategy(sessions, node_wait_timeout=1.0)
    grid = AppGrid(make_client_app(None, SOURCE), {1001: 0, 1002: 1})
    _drive(strategy, grid)

    assert strategy.user_nodes == {0: 1001, 1: 1002, 2: 1001}
    train = [m for m in grid.sent if m.metadata.message_type == MessageType.TRAIN]
    assert len(train) == 3 * 2  # one message per node and round
    first = next(m for m in train if m.metadata.dst_node_id == 1001)
    assert protocol.entry_indices(first.content) == [0, 1, 2, 3]  # 2 users x 2 points
    assert [decode(first.content, i).KIND for i in range(4)] == ["align_pilots"] * 4
    for point, session in zip(points, sessions, strict=True):
        alone = run_experiment(problem, point)
        outcome = session.outcome()
        np.testing.assert_allclose(session.ap.precoders()["F"], alone.precoders["F"], rtol=1e-10)
        np.testing.assert_allclose(outcome.results.accuracy, alone.results.accuracy, rtol=0)
        assert outcome.history.responded.tolist() == alone.history.responded.tolist()
        assert outcome.failures.empty


def test_replies_taken_as_they_arrive_in_any_order_give_the_same_numbers():
    """A windowed round hands the strategy its replies wave by wave: each uplink is
    absorbed at once and its arrays dropped from the reply; in reverse order, the numbers
    are bit for bit those of taking them all at the end."""
    problem = SOURCE.problem()
    run = settings_for(problem, **{"strategy.name": "federated"}, rounds=3, channel_uses=2, seed=5)
    runs = {}
    for streamed in (False, True):
        sessions = _sessions([run])
        strategy = AlignmentStrategy(sessions, node_wait_timeout=1.0)
        grid = AppGrid(make_client_app(None, SOURCE), {1001: 0, 1002: 1})
        for rnd in range(1, run.experiment.rounds + 1):
            messages = strategy.configure_train(rnd, ArrayRecord(), ConfigRecord(), grid)
            replies = grid.send_and_receive(messages)
            if streamed:
                for reply in reversed(replies):
                    strategy.take_replies([reply])
                assert not [k for r in replies for k in r.content if k.startswith("arrays")]
            strategy.aggregate_train(rnd, replies)
        runs[streamed] = sessions[0]
    np.testing.assert_array_equal(runs[True].ap.precoders()["F"], runs[False].ap.precoders()["F"])
    assert runs[True].history[-1] == runs[False].history[-1] | {
        "seconds": runs[True].history[-1]["seconds"]
    }


def test_a_smaller_point_of_a_sweep_uses_only_its_own_users_of_shared_nodes():
    """The nodes of a sweep are found with its largest point (3 users on 2 nodes: node 0
    serves users 0 and 2); a 2-user point over the same nodes sends nothing for user 2
    and gets its in-process numbers, with no failure."""
    from server.nodes import UserNodes

    problem = SOURCE.problem()
    small = SyntheticSource(n=200, n_test=80, ap_dim=12, user_dims=(14, 9))  # users 0, 1
    big = settings_for(problem, **{"strategy.name": "federated"}, rounds=2, channel_uses=2, seed=5)
    point = settings_for(small.problem(), **{"strategy.name": "federated"}, rounds=2, seed=5)
    grid = AppGrid(make_client_app(None, SOURCE), {1001: 0, 1002: 1})
    nodes = UserNodes(3, big.to_json())
    session = Session(build_parties(small.problem(), point)[0], point, small.ap_inputs())
    strategy = AlignmentStrategy([session], nodes=nodes, node_wait_timeout=1.0)
    nodes.connect(grid, (0, 1, 2), 1.0)
    _drive(strategy, grid)

    alone = run_experiment(small.problem(), point)
    outcome = session.outcome()
    assert outcome.failures.empty and outcome.history.responded.tolist() == [2, 2]
    np.testing.assert_allclose(session.ap.precoders()["F"], alone.precoders["F"], rtol=1e-10)
    assert outcome.results.accuracy.tolist() == alone.results.accuracy.tolist()
    for message in grid.sent:
        if message.metadata.message_type != MessageType.QUERY:
            users = {
                records.config(message.content, i)["user"] for i in records.entries(message.content)
            }
            assert users <= {0, 1}


def test_a_simulated_node_beyond_the_runs_users_serves_none_and_is_left_alone():
    """A federation with more SuperNodes than users (4 nodes, 3 users): the spare node
    says it serves nobody, the run goes on without it."""
    problem = SOURCE.problem()
    run = settings_for(problem, **{"strategy.name": "federated"}, rounds=2, seed=5)
    grid = AppGrid(make_client_app(None, SOURCE), {1001: 0, 1002: 1, 1003: 2, 1004: 3})
    strategy = AlignmentStrategy(_sessions([run]), node_wait_timeout=1.0)
    assert strategy.connect(grid) == {0: 1001, 1: 1002, 2: 1003}
    _drive(strategy, grid)
    assert strategy.sessions[0].outcome().history.responded.tolist() == [3, 3]
    assert 1004 not in {m.metadata.dst_node_id for m in grid.sent[4:]}  # after the queries


def test_a_simulated_node_refuses_an_entry_for_a_user_it_does_not_serve():
    problem = SOURCE.problem()
    run = settings_for(problem, **{"strategy.name": "federated"}, rounds=1, seed=5)
    ap, _ = build_parties(problem, run)
    app = make_client_app(None, SOURCE)
    grid = AppGrid(app, {1001: 0, 1002: 1})
    content = encode(ap.train_messages([1])[1], round=1, settings=run.to_json(), user=1)
    reply = grid.answer(_to_client(content, MessageType.TRAIN, 1001))
    assert "a message for user 1, which this node does not serve" in records.error(reply.content, 0)


def test_a_failing_entry_fails_its_point_only():
    problem = SOURCE.problem()
    good = settings_for(problem, **{"strategy.name": "federated"}, rounds=2, channel_uses=2, seed=5)
    bad = good.replace(seed=6)
    sessions = _sessions((good, bad))
    strategy = AlignmentStrategy(sessions, node_wait_timeout=1.0)

    def factory(index, source, settings):
        user = default_user(index, source, settings)
        if settings.seed == 6 and index == 1:
            user.train = lambda message: (_ for _ in ()).throw(RuntimeError("antenna melted"))
        return user

    _drive(strategy, _client_grid(make_client_app(None, SOURCE, factory)))
    assert sessions[0].failures == []
    assert [(f["stage"], f["round"], f["user"], f["reason"]) for f in sessions[1].failures] == [
        ("train", 1, 1, "RuntimeError: antenna melted"),
        ("train", 2, 1, "RuntimeError: antenna melted"),
        ("evaluate", 2, 1, "RuntimeError: user 1 has no equalizer yet: train first"),
    ]
    assert sessions[1].outcome().results.user.tolist() == [0, 2]
    assert sessions[0].outcome().results.user.tolist() == [0, 1, 2]


def test_points_of_different_shapes_cannot_share_rounds():
    problem = SOURCE.problem()
    short = settings_for(
        problem, **{"strategy.name": "federated"}, rounds=2, channel_uses=2, seed=5
    )
    long = short.replace(rounds=3)
    sessions = _sessions((short, long))
    with pytest.raises(
        ValueError,
        match="must share their users, number of rounds, completed rounds and deployment",
    ):
        AlignmentStrategy(sessions)


def test_lockstep_batches_are_even_and_never_mix_shapes():
    problem = SOURCE.problem()
    base = settings_for(problem, **{"strategy.name": "federated"}, rounds=3, channel_uses=2, seed=5)
    points = [base.replace(seed=s) for s in range(9)]
    points += [base.replace(**{"strategy.name": "top_k"}, seed=s) for s in range(9)]
    points += [base.replace(models=base.users.models[:2]), base.replace(rounds=4)]
    batches = lockstep_batches(points, 8)
    assert sorted(i for batch in batches for i in batch) == list(range(len(points)))
    assert sorted(len(b) for b in batches) == [1, 1, 4, 4, 5, 5]
    for batch in batches:
        shapes = {
            (points[i].users.models, points[i].strategy.name, points[i].experiment.rounds)
            for i in batch
        }
        assert len(shapes) == 1
    assert lockstep_batches(points, 1) == [[i] for i in range(len(points))]


def test_a_single_run_journals_every_round_and_a_failed_write_says_what_was_kept(tmp_path):
    """The history and failures reach the output folder after every round; when writing the
    final tables fails, the error says where the rounds are kept."""
    from server.sweep import WriteTo, run_point

    problem = SOURCE.problem()
    run = settings_for(problem, **{"strategy.name": "federated"}, rounds=3, channel_uses=2, seed=5)
    grid = _client_grid(make_client_app(None, SOURCE))
    seen_rounds = []

    class FullDisk(WriteTo):
        def __call__(self, settings, outcome):
            import pandas as pd

            seen_rounds.append(len(pd.read_csv(Path(self.folder) / "history.csv")))
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left") as info:
        run_point(grid, run, FullDisk(str(tmp_path / "run")), SOURCE)
    assert seen_rounds == [3]  # every round was on disk before the final write
    assert any("kept in" in note and "run" in note for note in info.value.__notes__)
    assert (tmp_path / "run" / "failures.csv").exists()
    assert not (tmp_path / "run" / "results.parquet").exists()

    run_point(grid, run, WriteTo(str(tmp_path / "ok")), SOURCE)
    written = RunOutcome.load(tmp_path / "ok")
    assert len(written.history) == 3 and len(written.results) == 3


def test_the_configured_timeouts_bound_node_discovery_and_every_round(tmp_path):
    from server.sweep import WriteTo, run_point

    problem = SOURCE.problem()
    run = settings_for(
        problem,
        **{"strategy.name": "federated"},
        rounds=2,
        channel_uses=2,
        seed=5,
        node_timeout=7.0,
        node_timeout_per_user=0.5,
        round_timeout=42.0,
        round_timeout_factor=10.0,
    )
    grid = _client_grid(make_client_app(None, SOURCE))
    run_point(grid, run, WriteTo(str(tmp_path / "run")), SOURCE)
    assert grid.timeouts[0] == 7.0 + 0.5 * 3  # the node query: in proportion to the users
    assert set(grid.timeouts[1:]) == {42.0}  # rounds: the pace's 60 s floor exceeds the cap
    paced = run.replace(round_timeout=600.0)
    grid = _client_grid(make_client_app(None, SOURCE))
    run_point(grid, paced, WriteTo(str(tmp_path / "paced")), SOURCE)
    # round 1 (users prepare their inputs in it) and its empty evaluation step get the
    # configured bound; round 2's training 10x a fast round, at least 60 s; the evaluation,
    # other work and the first of its kind, the configured bound again
    assert grid.timeouts[1:] == [600.0, 600.0, 60.0, 600.0]


def test_a_lost_node_fails_only_the_points_that_sent_to_it():
    """A whole-reply error (the node is gone) counts in a point only in the rounds where that
    point trained with the user: partial participation does not invent failures."""
    problem = SOURCE.problem()
    full = settings_for(problem, **{"strategy.name": "federated"}, rounds=4, channel_uses=2, seed=5)
    sampled = full.replace(participation=0.34)  # one of three users per round
    sessions = _sessions((full, sampled))
    strategy = AlignmentStrategy(sessions, node_wait_timeout=1.0)
    app = make_client_app(None, SOURCE)
    contexts = {node: _context(user) for node, user in NODES.items()}

    def answer(message: Message) -> Message:
        node = message.metadata.dst_node_id
        if NODES[node] == 2:
            return Message(Error(code=0, reason="Exception; Message: node lost"), reply_to=message)
        return app(_to_client(message.content, message.metadata.message_type, node), contexts[node])

    grid = FakeGrid(NODES, answer)
    for rnd in range(1, 5):
        strategy.aggregate_train(
            rnd,
            grid.send_and_receive(
                strategy.configure_train(rnd, ArrayRecord(), ConfigRecord(), grid)
            ),
        )
    expected = [r for r in range(1, 5) if 2 in sessions[1].participants(r, [0, 1, 2])]
    assert 0 < len(expected) < 4
    assert [f["round"] for f in sessions[1].failures if f["user"] == 2] == expected
    assert [f["round"] for f in sessions[0].failures if f["user"] == 2] == [1, 2, 3, 4]


def test_the_module_level_apps_are_flowers_and_the_old_in_flight_key_still_reads():
    """``flwr run .`` loads ``app`` from each module (pyproject's components); the run config
    key ``cells-in-flight`` of earlier versions still works, with a deprecation warning."""
    from pathlib import Path

    import tomllib
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from clients import client_app
    from server import server_app

    assert isinstance(client_app.app, ClientApp) and isinstance(server_app.app, ServerApp)
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    flwr = pyproject["tool"]["flwr"]["app"]
    assert flwr["components"] == {
        "serverapp": "server.server_app:app",
        "clientapp": "clients.client_app:app",
    }
    assert server_app.points_in_flight(flwr["config"]) == 8
    with pytest.warns(FutureWarning, match="'cells-in-flight' is deprecated"):
        assert server_app.points_in_flight({**flwr["config"], "cells-in-flight": 3}) == 3
    with pytest.raises(ValueError, match="disagree: set only 'points-in-flight'"):
        server_app.points_in_flight({"points-in-flight": 4, "cells-in-flight": 3})
    with pytest.raises(ValueError, match="'points-in-flight' must be a whole number >= 1"):
        server_app.points_in_flight({"points-in-flight": 0})


def test_nodes_are_found_once_for_every_point_of_a_sweep_whatever_its_users():
    """A sweep's first batch has 3 users, a later one 8: every node is asked once, and the
    nodes of users 3..7 are known when the later batch starts."""
    from server.nodes import UserNodes

    grid = FakeGrid({1000 + k: k for k in range(8)}, lambda m: None)
    nodes = UserNodes(8, "{}")
    assert set(nodes.connect(grid, (0, 1, 2), 1.0)) == set(range(8))
    assert nodes.connect(grid, tuple(range(8)), 1.0) == {k: 1000 + k for k in range(8)}
    assert len(grid.sent) == 8


def test_a_sweep_with_nothing_left_to_run_returns_at_once():
    from server.sweep import run_points

    assert run_points(FakeGrid({}, lambda m: None), [], WriteTo("never"), SOURCE) is None
