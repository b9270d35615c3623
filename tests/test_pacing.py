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


class _LinkState:
    """A grid over a link state that answers a pushed message ``pulls`` pulls later (a
    silent node never); it records the most messages it held at once."""

    def __init__(self, pulls: int = 2, silent: tuple[int, ...] = ()):
        self.pulls, self.silent = pulls, silent
        self.held: dict[str, tuple[Message, int]] = {}
        self.most = 0
        self.pull_interval = 0.001

    def push_messages(self, messages):
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = f"m{m.metadata.dst_node_id}"
            self.held[m.metadata.message_id] = (m, 0)
            ids.append(m.metadata.message_id)
        self.most = max(self.most, len(self.held))
        return ids

    def pull_messages(self, ids):
        replies = []
        for i in ids:
            m, seen = self.held[i]
            if seen + 1 >= self.pulls and m.metadata.dst_node_id not in self.silent:
                replies.append(Message(RecordDict(), reply_to=m))
                del self.held[i]
            else:
                self.held[i] = (m, seen + 1)
        return replies

    def send_and_receive(self, messages, *, timeout=None):
        raise AssertionError("a windowed round pushes and pulls itself")


def test_a_window_keeps_at_most_that_many_messages_waiting_and_every_user_answers():
    grid = _LinkState(pulls=3)
    paced = PacedGrid(grid, cap=30.0, factor=10.0, window=4)
    replies = paced.send_and_receive(_round(MessageType.TRAIN, nodes=range(1, 21)))
    assert grid.most == 4  # never more than the window in the link state
    assert sorted(r.metadata.src_node_id for r in replies) == list(range(1, 21))
    assert MessageType.TRAIN in paced.slowest  # a complete round sets the pace


def test_a_windowed_round_ends_at_its_bound_with_the_silent_users_unanswered():
    grid = _LinkState(pulls=1, silent=(1, 2))
    paced = PacedGrid(grid, cap=0.3, factor=10.0, window=2)
    start = time.monotonic()
    replies = paced.send_and_receive(_round(MessageType.TRAIN, nodes=range(1, 7)))
    assert 0.3 <= time.monotonic() - start < 2
    # nodes 1 and 2 hold the window to the end, as hung users hold a simulation's actors
    assert replies == [] and paced.slowest == {}
    with pytest.raises(ValueError, match="window must be at least 1 message, got 0"):
        PacedGrid(grid, cap=1.0, factor=1.0, window=0)
