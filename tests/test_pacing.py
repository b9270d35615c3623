"""Waits in proportion to the work: node discovery by users, rounds by the run's own pace."""

from __future__ import annotations

import time

import pytest
from flwr.app import Message, MessageType, RecordDict

from common.run.settings import ConfigError
from conf import settings as configured
from server.pacing import PacedGrid

pytestmark = pytest.mark.usefixtures("task_identity")  # Flower messages need a run identity


class _Grid:
    """Answers every message after ``seconds[type]``; drops the messages to ``silent`` nodes."""

    def __init__(self, seconds: dict[str, float], silent: tuple[int, ...] = ()):
        self.seconds, self.silent, self.timeouts = seconds, silent, []
        self.pull_interval = 0.1

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.timeouts.append((messages[0].metadata.message_type, timeout))
        time.sleep(self.seconds.get(messages[0].metadata.message_type, 0.0))
        return [
            Message(RecordDict(), reply_to=m)
            for m in messages
            if m.metadata.dst_node_id not in self.silent
        ]


def _round(kind: str, nodes=(1, 2)) -> list[Message]:
    return [Message(RecordDict(), dst_node_id=n, message_type=kind, group_id="1") for n in nodes]


def test_rounds_wait_in_proportion_to_the_slowest_complete_round():
    grid = _Grid({MessageType.TRAIN: 0.05, MessageType.EVALUATE: 0.01})
    paced = PacedGrid(grid, cap=600.0, factor=10.0, floor=0.2)
    paced.send_and_receive(_round(MessageType.QUERY), timeout=7.0)
    assert paced.slowest == {}  # a node query sets no pace
    paced.send_and_receive(_round(MessageType.TRAIN), timeout=600.0)
    slowest = paced.slowest[MessageType.TRAIN]
    assert 0.05 <= slowest < 0.5 and paced.bound() == pytest.approx(10 * slowest)
    paced.send_and_receive(_round(MessageType.TRAIN), timeout=600.0)
    paced.send_and_receive(_round(MessageType.EVALUATE), timeout=600.0)
    paced.send_and_receive(_round(MessageType.EVALUATE), timeout=600.0)
    limits = [timeout for _, timeout in grid.timeouts]
    assert limits[:2] == [7.0, 600.0]  # until a round completed: the configured timeouts
    assert limits[2] == pytest.approx(10 * slowest) and limits[2] < 5
    # evaluation is other work: its first round waits the cap, then its own pace
    assert limits[3] == 600.0 and limits[4] < 5
    assert paced.pull_interval == 0.1  # everything else is the wrapped grid's


def test_a_round_with_a_silent_user_sets_no_pace_and_the_floor_and_cap_hold():
    grid = _Grid({MessageType.TRAIN: 0.05}, silent=(2,))
    paced = PacedGrid(grid, cap=30.0, factor=10.0, floor=0.2)
    paced.send_and_receive(_round(MessageType.TRAIN))
    assert paced.slowest == {} and paced.bound() == 30.0
    assert PacedGrid(grid, cap=30.0, factor=0.0).bound() == 30.0  # factor 0: always the cap
    fast = PacedGrid(_Grid({}), cap=30.0, factor=10.0)
    fast.send_and_receive(_round(MessageType.TRAIN))
    assert fast.bound() == 30.0  # the floor (60 s) is bounded by the configured cap
    slow = PacedGrid(_Grid({}), cap=600.0, factor=10.0)
    slow.send_and_receive(_round(MessageType.TRAIN))
    assert slow.bound() == 60.0  # a fast round: at least the floor


def test_node_discovery_waits_in_proportion_to_the_users_and_bad_values_are_refused():
    settings = configured("experiment.node_timeout=100", "experiment.node_timeout_per_user=3")
    assert settings.node_wait == 100 + 3 * settings.num_users
    for key, value in (("node_timeout_per_user", -1), ("round_timeout_factor", "fast")):
        with pytest.raises(ConfigError, match=f"experiment.{key}"):
            configured(f"experiment.{key}={value}")
