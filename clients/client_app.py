"""The ClientApp: each SuperNode runs one user, chosen by its ``partition-id``.

The same app serves simulation (Ray assigns partition ids) and deployment (a
SuperNode started with ``--node-config "partition-id=K"``). A user is rebuilt
deterministically from the run settings, so the process keeps a cache of them;
what it learns (equalizer, feature map) lives in the node's ``context.state``
because Ray may move a node between processes.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.client import AlignmentClient
from common.parties import protocol
from common.parties.user import User
from common.run.session import build_user
from common.run.settings import RunSettings
from common.run.sources import ProblemSource

STATE = "user_state"

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


def make_client_app(
    settings: RunSettings | None = None,
    source: ProblemSource | None = None,
    user_factory: UserFactory = default_user,
) -> ClientApp:
    """A ClientApp bound to ``settings``/``source``, or reading them from the run config."""
    app = ClientApp()

    def user_for(context: Context) -> User:
        resolved = settings
        if resolved is None:
            from conf import settings_from_run_config

            resolved = settings_from_run_config(context.run_config)
        src = source
        if src is None:
            from common.assets.source import AssetSource

            src = AssetSource(resolved)
        user = cached_user(int(context.node_config["partition-id"]), src, resolved, user_factory)
        saved = context.state.get(STATE)
        user.import_state({} if saved is None else {k: a.numpy() for k, a in saved.items()})
        return user

    def request(msg: Message) -> tuple[list, dict]:
        """The AP's arrays in declared order and the config (its ``kind``)."""
        return msg.content[protocol.ARRAYS].to_numpy_ndarrays(), dict(msg.content[protocol.CONFIG])

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        identity = MetricRecord({"partition-id": int(context.node_config["partition-id"])})
        return Message(RecordDict({protocol.METRICS: identity}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        user = user_for(context)
        arrays, _, metrics = AlignmentClient(user).fit(*request(msg))
        kind = metrics.pop("kind")
        context.state[STATE] = ArrayRecord({k: Array(v) for k, v in user.export_state().items()})
        content = RecordDict({
            protocol.ARRAYS: ArrayRecord(numpy_ndarrays=arrays),
            protocol.CONFIG: ConfigRecord({"kind": kind}),
            protocol.METRICS: MetricRecord(metrics),
        })  # fmt: skip
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        _, _, metrics = AlignmentClient(user_for(context)).evaluate(*request(msg))
        return Message(RecordDict({protocol.METRICS: MetricRecord(metrics)}), reply_to=msg)

    return app


# `flwr run .` entry point ([tool.flwr.app.components] clientapp).
app = make_client_app()
