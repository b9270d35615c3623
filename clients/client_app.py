"""The ClientApp: each SuperNode runs one user, chosen by its ``partition-id``.

The same app serves simulation (Ray assigns partition ids) and deployment (a
SuperNode started with ``--node-config "partition-id=K"``). A user is rebuilt
deterministically from the run settings, so the process keeps a cache of them;
what it learns (equalizer, feature map) lives in the node's ``context.state``
because Ray may move a node between processes.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.user_client import AlignmentClient
from common import protocol
from common.settings import RunSettings
from common.sources import ProblemSource
from common.user import User
from server import wire

STATE = "user_state"

UserFactory = Callable[[int, ProblemSource, RunSettings], User]

_USERS: dict[tuple, User] = {}


def default_user(index: int, source: ProblemSource, settings: RunSettings) -> User:
    return User(index, source.user_data(index), settings.link, settings.seed)


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


def _asset_source(settings: RunSettings) -> ProblemSource:
    from common.asset_source import AssetSource

    return AssetSource(settings)


def make_client_app(
    settings: RunSettings | None = None,
    source: ProblemSource | None = None,
    user_factory: UserFactory = default_user,
) -> ClientApp:
    """A ClientApp bound to ``settings``/``source``, or reading them from the run config."""
    app = ClientApp()

    def resolve(context: Context) -> tuple[RunSettings, ProblemSource]:
        if settings is None:
            from server.runconfig import settings_from_run_config

            resolved = settings_from_run_config(context.run_config)
        else:
            resolved = settings
        return resolved, source if source is not None else _asset_source(resolved)

    def user_for(context: Context) -> User:
        resolved, src = resolve(context)
        user = cached_user(int(context.node_config["partition-id"]), src, resolved, user_factory)
        saved = context.state.get(STATE)
        user.import_state(wire.numpy_arrays(saved) if saved is not None else {})
        return user

    def parameters(msg: Message) -> tuple[str, list]:
        kind = str(msg.content[wire.CONFIG]["kind"])
        arrays = wire.numpy_arrays(msg.content[wire.ARRAYS])
        return kind, [arrays[name] for name in protocol.message_class(kind).field_names()]

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        identity = MetricRecord({"partition-id": int(context.node_config["partition-id"])})
        return Message(RecordDict({wire.METRICS: identity}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        user = user_for(context)
        kind, params = parameters(msg)
        reply_arrays, _, metrics = AlignmentClient(user).fit(params, {"kind": kind})
        reply = protocol.message_class(protocol.REPLY_KIND[kind]).from_list(reply_arrays)
        context.state[STATE] = wire.array_record(user.export_state())
        content = wire.encode(reply)
        content[wire.METRICS] = wire.metric_record(metrics)
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        user = user_for(context)
        kind, params = parameters(msg)
        _, _, metrics = AlignmentClient(user).evaluate(params, {"kind": kind})
        content = RecordDict(
            {wire.METRICS: wire.metric_record(metrics), wire.CONFIG: ConfigRecord({"kind": "ok"})}
        )
        return Message(content, reply_to=msg)

    return app


# `flwr run .` entry point ([tool.flwr.app.components] clientapp).
app = make_client_app()
