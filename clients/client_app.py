"""The ClientApp: each SuperNode runs one user, chosen by its ``partition-id``.

The same app serves simulation (Ray assigns partition ids) and deployment (a
SuperNode started with ``--node-config "partition-id=K"``). Every message names
the settings of the run (the cell of a sweep) it belongs to; the user is
rebuilt deterministically from them, so the process keeps a cache of users.
What a user learns (equalizer, feature map) lives in the node's
``context.state``, tagged with its cell, because Ray may move a node between
processes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.client import AlignmentClient
from common.parties import protocol
from common.parties.user import User
from common.run.cells import cell_key
from common.run.session import build_user
from common.run.settings import RunSettings
from common.run.sources import ProblemSource

STATE = "user_state"
STATE_CELL = "user_state_cell"  # which cell the saved state belongs to

UserFactory = Callable[[int, ProblemSource, RunSettings], User]

_USERS: dict[tuple, User] = {}


def default_user(index: int, source: ProblemSource, settings: RunSettings) -> User:
    """The method's own user class over this user's private inputs."""
    return build_user(settings, index, source.user_data(index))


def cached_user(
    index: int, source: ProblemSource, settings: RunSettings, factory: UserFactory
) -> User:
    """This process's copy of user ``index`` for this run (other runs' users are dropped)."""
    run = (settings.to_json(), source, factory)
    for key in [k for k in _USERS if k[:3] != run]:
        del _USERS[key]
    key = (*run, index)
    if key not in _USERS:
        _USERS[key] = factory(index, source, settings)
    return _USERS[key]


@functools.lru_cache(maxsize=4)
def _settings_from_json(text: str) -> RunSettings:
    return RunSettings.from_json(text)


def make_client_app(
    settings: RunSettings | None = None,
    source: ProblemSource | None = None,
    user_factory: UserFactory = default_user,
) -> ClientApp:
    """A ClientApp bound to ``settings``/``source``, or reading them from the run config."""
    app = ClientApp()

    def user_for(msg: Message, context: Context) -> tuple[User, str]:
        """This node's user for the message's cell, with what it learned in that cell."""
        config = msg.content[protocol.CONFIG]
        if "settings" in config:
            resolved = _settings_from_json(str(config["settings"]))
        elif settings is not None:
            resolved = settings
        else:
            from conf import settings_from_run_config

            resolved = settings_from_run_config(context.run_config)
        src = source
        if src is None:
            from common.assets.source import AssetSource

            src = AssetSource(resolved)
        user = cached_user(int(context.node_config["partition-id"]), src, resolved, user_factory)
        cell = cell_key(resolved)
        saved = context.state.get(STATE)
        same_cell = STATE_CELL in context.state and context.state[STATE_CELL]["key"] == cell
        learned = {k: a.numpy() for k, a in saved.items()} if saved and same_cell else {}
        user.import_state(learned)
        return user, cell

    def request(msg: Message) -> tuple[list, dict]:
        """The AP's arrays in declared order and the config (its ``kind``)."""
        return msg.content[protocol.ARRAYS].to_numpy_ndarrays(), dict(msg.content[protocol.CONFIG])

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        identity = MetricRecord({"partition-id": int(context.node_config["partition-id"])})
        return Message(RecordDict({protocol.METRICS: identity}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        user, cell = user_for(msg, context)
        arrays, _, metrics = AlignmentClient(user).fit(*request(msg))
        kind = metrics.pop("kind")
        context.state[STATE] = ArrayRecord({k: Array(v) for k, v in user.export_state().items()})
        context.state[STATE_CELL] = ConfigRecord({"key": cell})
        content = RecordDict({
            protocol.ARRAYS: ArrayRecord(numpy_ndarrays=arrays),
            protocol.CONFIG: ConfigRecord({"kind": kind}),
            protocol.METRICS: MetricRecord(metrics),
        })  # fmt: skip
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        user, _ = user_for(msg, context)
        _, _, metrics = AlignmentClient(user).evaluate(*request(msg))
        return Message(RecordDict({protocol.METRICS: MetricRecord(metrics)}), reply_to=msg)

    return app


# `flwr run .` entry point ([tool.flwr.app.components] clientapp).
app = make_client_app()
