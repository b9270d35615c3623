"""A user device from its node config: its own built assets, and a run it cannot serve
refused at start-up; a node lost and back under a new id rejoins at the next round."""

from __future__ import annotations

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from clients.client_app import make_client_app
from clients.device import Device, DeviceConfigError
from common.run.session import Session
from server.nodes import NodeRefused
from server.strategy import AlignmentStrategy
from tests.synthetic import settings_for
from tests.test_apps import SOURCE, FakeGrid, _sessions

pytestmark = pytest.mark.usefixtures("task_identity")  # Flower messages need a run identity


@pytest.mark.parametrize(
    "config, message",
    [
        ({}, "partition-id=None must be the user's index"),
        ({"partition-id": -1}, "partition-id=-1 must be the user's index"),
        ({"partition-id": "1"}, "partition-id='1' must be the user's index"),
        ({"partition-id": 0, "model": "resnet10t"}, "model='resnet10t' needs cache-dir"),
        ({"partition-id": 0, "model": ""}, "model='' must be a non-empty string"),
        ({"partition-id": 0, "modle": "x"}, "key(s) modle are unknown"),
        ({"partition-id": 0}, "node config has no model: a deployed device names the model"),
    ],
)
def test_a_bad_node_config_is_named(config, message):
    with pytest.raises(DeviceConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Device.from_node_config(config)


def test_a_device_refuses_a_run_it_cannot_serve():
    from conf import settings

    run = settings("users.count=3")  # vit_small_p16, resnet10t, levit_128s
    Device(1, "resnet10t", "/tmp/x").check(run)
    with pytest.raises(DeviceConfigError, match=r"partition-id=3 is outside this run's users 0..2"):
        Device(3).check(run)
    with pytest.raises(
        DeviceConfigError,
        match=r"model='levit_128s', but this run's user 1 runs "
        r"'resnet10t'",
    ):
        Device(1, "levit_128s", "/tmp/x").check(run)
    with pytest.raises(
        DeviceConfigError,
        match=r"model='vit_huge' is not a user model of zoo "
        r"'embedded' \(known: vit_small_p16, ",
    ):
        Device(1, "vit_huge", "/tmp/x").check(run)


def test_a_device_without_its_assets_says_how_to_build_them(tmp_path, cache_dir):
    """The device's cache is its own: a missing entry is never built during a run."""
    from common.assets.cache import CacheError
    from conf import settings

    run = settings("users.count=2", f"cache_dir={cache_dir}")
    device = Device(1, "resnet10t", str(tmp_path / "device"))
    with pytest.raises(
        CacheError,
        match=(
            r"has no latents entry .*: build this device's assets first: "
            r"python -m launch.assets user --model resnet10t --cache-dir .*/device "
            r"data=mnist5k data.split_seed=0 users.zoo=embedded users.head_seed=0"
        ),
    ):
        device.source(run).user_data(1)
    assert not any((tmp_path / "device").rglob("*.safetensors"))


@pytest.mark.slow
def test_launch_assets_builds_one_device_and_the_ap_only_what_each_needs(tmp_path, cache_dir):
    """`launch.assets user` fills the device's folder with its model's latents and head (and
    its encoder) only; the ClientApp then serves from there. `launch.assets ap` builds the
    AP's latents only."""
    import numpy as np

    from common.assets.source import AssetSource
    from conf import settings
    from launch.assets import main

    device_dir = tmp_path / "device"
    assert main(["user", "--model", "resnet10t", "--cache-dir", str(device_dir)]) == 0
    kinds = sorted(p.parent.parent.name for p in device_dir.rglob("manifest.json"))
    assert kinds == ["encoder", "head", "latents"]
    run = settings("users.count=2", f"cache_dir={cache_dir}")
    own = Device(1, "resnet10t", str(device_dir)).source(run).user_data(1)
    shared = AssetSource(run).user_data(1)
    np.testing.assert_array_equal(own.pilots, shared.pilots)  # the same encoder, rebuilt
    assert main(["user", "--model", "vit_huge", "--cache-dir", str(device_dir)]) == 1

    ap_dir = tmp_path / "ap"
    assert main(["ap", f"cache_dir={ap_dir}"]) == 0
    built = sorted(p.parent.parent.name for p in ap_dir.rglob("manifest.json"))
    assert built == ["encoder", "latents"]  # no user's asset, no head


# ---- the strategy's side ------------------------------------------------------------------
def _context(node_config: dict) -> Context:
    """A simulated node's context (Flower's simulation adds num-partitions)."""
    return Context(
        run_id=7,
        node_id=1,
        node_config={"num-partitions": 3, **node_config},
        state=RecordDict(),
        run_config={},
    )


def _app_grid(nodes: dict[int, dict]) -> FakeGrid:
    """A grid whose nodes run the real ClientApp with the given node configs."""
    app = make_client_app(None, SOURCE)
    contexts = {node: _context(config) for node, config in nodes.items()}

    def answer(message: Message) -> Message:
        node = message.metadata.dst_node_id
        to_node = Message(
            message.content, dst_node_id=node, message_type=message.metadata.message_type
        )
        return app(to_node, contexts[node])

    grid = FakeGrid({n: c.get("partition-id") for n, c in nodes.items()}, answer)
    grid.contexts = contexts

    def send_and_receive(messages, *, timeout=None):  # queries go to the ClientApp too
        grid.timeouts.append(timeout)
        messages = list(messages)
        grid.sent += messages
        return [answer(m) for m in messages if m.metadata.dst_node_id in grid.nodes]

    grid.send_and_receive = send_and_receive
    return grid


def _strategy(rounds: int = 3) -> tuple[AlignmentStrategy, list[Session]]:
    problem = SOURCE.problem()
    run = settings_for(
        problem, **{"strategy.name": "federated"}, rounds=rounds, channel_uses=2, seed=5
    )
    sessions = _sessions([run])
    return AlignmentStrategy(sessions, node_wait_timeout=1.0), sessions


def test_a_node_that_cannot_serve_the_run_stops_it_at_start_with_its_reason():
    strategy, _ = _strategy()
    grid = _app_grid(
        {11: {"partition-id": 0}, 12: {"partition-id": 1}, 13: {"partition-id": 2, "modle": "x"}}
    )
    with pytest.raises(
        NodeRefused,
        match=r"node 13 cannot serve this run: DeviceConfigError: "
        r"node config key\(s\) modle are unknown",
    ):
        strategy.connect(grid)
    strategy, _ = _strategy()
    grid = _app_grid({11: {"partition-id": 0}, 12: {"partition-id": 1}, 13: {"partition-id": 5}})
    with pytest.raises(
        NodeRefused,
        match=r"node 13 cannot serve this run: .*partition-id=5 "
        r"is outside this run's users 0..2",
    ):
        strategy.connect(grid)


def test_a_lost_node_back_under_a_new_id_rejoins_at_the_next_round():
    """User 2's node dies after round 1 (its replies stop, its state is gone) and comes back
    as node 23 before round 3: round 2 records it as failed, round 3 trains with it again,
    rebuilt from nothing, and it is evaluated."""
    strategy, sessions = _strategy(rounds=3)
    grid = _app_grid({11: {"partition-id": 0}, 12: {"partition-id": 1}, 13: {"partition-id": 2}})
    for rnd in (1, 2, 3):
        if rnd == 2:
            del grid.nodes[13]  # killed: nothing answers for it any more
        if rnd == 3:
            grid.nodes[23] = 2
            grid.contexts[23] = _context({"partition-id": 2})  # a fresh process, no state
        replies = grid.send_and_receive(
            strategy.configure_train(rnd, ArrayRecord(), ConfigRecord(), grid)
        )
        strategy.aggregate_train(rnd, replies)
    strategy.aggregate_evaluate(
        3,
        grid.send_and_receive(strategy.configure_evaluate(3, ArrayRecord(), ConfigRecord(), grid)),
    )
    outcome = sessions[0].outcome()
    assert strategy.user_nodes == {0: 11, 1: 12, 2: 23}
    assert [(f["round"], f["user"], f["reason"]) for f in sessions[0].failures] == [
        (2, 2, "no reply")
    ]
    assert outcome.history.responded.tolist() == [3, 2, 3]
    assert outcome.results.user.tolist() == [0, 1, 2]
    queries = [m for m in grid.sent if m.metadata.message_type == MessageType.QUERY]
    assert sorted(m.metadata.dst_node_id for m in queries) == [11, 12, 13, 23]  # asked once


def test_a_node_that_cannot_serve_joining_mid_run_is_left_out_and_a_silent_one_asked_again(
    caplog,
):
    strategy, sessions = _strategy(rounds=3)
    grid = _app_grid({11: {"partition-id": 0}, 12: {"partition-id": 1}, 13: {"partition-id": 2}})
    send = grid.send_and_receive
    for rnd in (1, 2, 3):
        if rnd == 2:  # a misconfigured node, and user 1's node back (as 22) after it died,
            # whose reply is lost this round
            del grid.nodes[12]
            grid.nodes[21] = 9
            grid.contexts[21] = _context({"partition-id": 9})
            grid.nodes[22] = 1
            grid.contexts[22] = _context({"partition-id": 1})
            grid.send_and_receive = lambda messages, *, timeout=None: [
                r for r in send(messages, timeout=timeout) if r.metadata.src_node_id != 22
            ]
        if rnd == 3:
            grid.send_and_receive = send
        strategy.aggregate_train(
            rnd,
            grid.send_and_receive(
                strategy.configure_train(rnd, ArrayRecord(), ConfigRecord(), grid)
            ),
        )
        if rnd == 2:
            assert strategy.user_nodes[1] == 12  # node 22 said nothing yet
    assert "partition-id=9 is outside this run's users 0..2; it is left out" in caplog.text
    assert strategy.user_nodes == {0: 11, 1: 22, 2: 13}  # asked again in round 3
    assert len(sessions[0].history) == 3


def test_a_device_written_as_node_config_reads_back_through_flowers_parser():
    """What the federation passes to a SuperNode is what the ClientApp reads back."""
    from flwr.common.config import parse_config_args

    device = Device(2, "resnet10t", "/data/my cache", weights_dir="/w", data_root="/d")
    assert Device.from_node_config(parse_config_args([device.node_config()])) == device
    assert Device(0, "levit_128s", "/c").node_config() == (
        'partition-id=0 model="levit_128s" cache-dir="/c"'
    )


def test_two_nodes_with_one_partition_id_stop_the_run_at_start_naming_both():
    strategy, _ = _strategy()
    grid = _app_grid({11: {"partition-id": 0}, 12: {"partition-id": 1}, 13: {"partition-id": 1}})
    with pytest.raises(NodeRefused, match=r"nodes 12 and 13 both have node config partition-id=1"):
        strategy.connect(grid)


def test_a_node_joining_with_a_held_partition_id_waits_until_the_holder_has_gone(caplog):
    """Mid-run, node 22 says it runs user 1, which node 12 serves and still answers: 22 is
    left out with a warning and asked again each round; once 12 has gone, 22 takes over."""
    strategy, sessions = _strategy(rounds=4)
    grid = _app_grid({11: {"partition-id": 0}, 12: {"partition-id": 1}, 13: {"partition-id": 2}})
    for rnd in (1, 2, 3, 4):
        if rnd == 2:
            grid.nodes[22] = 1
            grid.contexts[22] = _context({"partition-id": 1})
        if rnd == 4:
            del grid.nodes[12]  # the holder is gone
        with caplog.at_level("WARNING", logger="server.nodes"):
            replies = grid.send_and_receive(
                strategy.configure_train(rnd, ArrayRecord(), ConfigRecord(), grid)
            )
        strategy.aggregate_train(rnd, replies)
        assert strategy.user_nodes[1] == (12 if rnd < 4 else 22)
    assert "node 22 has partition-id=1, which node 12 serves: it is left out" in caplog.text
    assert sessions[0].failures == []  # user 1 answered in every round, from one node
