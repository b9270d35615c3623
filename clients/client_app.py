"""The ClientApp: each SuperNode runs one user, chosen by its ``partition-id`` (a simulated
SuperNode may serve several, :meth:`clients.device.Device.users`; each entry of a message
names its user).

The same app serves simulation (Ray assigns partition ids) and deployment (a
SuperNode started with ``--node-config 'partition-id=K model=... cache-dir=...'``,
see :mod:`clients.device`). ``app`` below is the module-level ClientApp that
``flwr run .`` loads; :func:`make_client_app` makes one bound to a run's
settings and inputs for a simulation.

A message carries one entry per sweep point in flight (one entry for a single
run), and every entry names the settings of its point; the user is rebuilt
deterministically from them, so the process keeps a cache of users. What a
user learns (equalizer, feature map) lives in the node's ``context.state``
under its point's key, because Ray may move a node between processes. A
point's state is dropped once the point is evaluated, or when a message no
longer names it among the points in flight. An entry that fails (a wrong
message kind, a user that raises) is answered with its error, so the other
points of the same message go on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from clients.client import AlignmentClient
from clients.device import Device
from clients.shelf import Shelf
from common.maths.conventions import Conventions
from common.parties import protocol
from common.parties.access_point import access_point_class
from common.parties.user import PreparedData, User
from common.run.points import point_key
from common.run.session import build_user
from common.run.settings import RunSettings
from common.run.sources import ProblemSource
from transport import records

STATE = "user_state."  # + the point's key: what the user learned in that point

UserFactory = Callable[[int, ProblemSource, RunSettings], User]

_USERS: dict[tuple, dict[int, User]] = {}  # by run (settings, source, factory), by user


def default_user(
    index: int, source: ProblemSource, settings: RunSettings, shelf: Shelf | None = None
) -> User:
    """The method's own user class over this user's private inputs.

    With a ``shelf``, and a source that names its data (``user_key``), the
    inputs are prepared once per machine and every process, and every point of
    a sweep over the same data, maps that one copy.
    """
    user_class = access_point_class(settings.strategy.name).user_class
    conventions = Conventions(settings.conventions.name)
    key = source.user_key(index)

    def prepare() -> PreparedData:
        return user_class.prepare(index, source.user_data(index), conventions)

    if shelf is None or key is None:
        return build_user(settings, index, prepare())
    kind = f"{user_class.__module__}.{user_class.__qualname__}"
    shared = shelf.get(f"{key} | {kind} | {conventions.unbiased_covariance}", prepare)
    return build_user(settings, index, shared)


@dataclass(frozen=True)
class SharedUsers:
    """:func:`default_user` over a shelf. Equal for the same shelf, so that a process's
    user cache still finds its users when Ray hands it a freshly unpickled app."""

    shelf: Shelf

    def __call__(self, index: int, source: ProblemSource, settings: RunSettings) -> User:
        return default_user(index, source, settings, self.shelf)


def cached_users(
    wanted: list[tuple[int, RunSettings, ProblemSource]], factory: UserFactory
) -> list[User]:
    """This process's copies of the users ``wanted`` (user index, and the run it is in).

    A process may serve several nodes, each one or more users; the users of runs
    other than these are dropped, those of other nodes in these runs are kept.
    """
    keys = [(settings.to_json(), source, factory) for _, settings, source in wanted]
    for run in [run for run in _USERS if run not in keys]:  # a few runs, not every user
        del _USERS[run]
    users = []
    for key, (index, settings, source) in zip(keys, wanted, strict=True):
        held = _USERS.setdefault(key, {})
        if index not in held:
            held[index] = factory(index, source, settings)
        users.append(held[index])
    return users


@functools.lru_cache(maxsize=64)
def _settings_from_json(text: str) -> RunSettings:
    return RunSettings.from_json(text)


def state_key(settings: RunSettings, user: int) -> str:
    """Where a node keeps what ``user`` learned in the point of ``settings``."""
    return f"{STATE}{point_key(settings)}.{user}"


def _point_of(key: str) -> str:
    """The point key of a :func:`state_key`."""
    return key[len(STATE) :].rsplit(".", 1)[0]


@dataclass(frozen=True)
class UserNode:
    """What a SuperNode does with each message: its user, in every point a message names.

    ``settings``/``source``: a run this node is bound to (a simulation); otherwise each
    entry names its settings, or the run config's ``overrides`` do, and the inputs are
    the device's own (:class:`~clients.device.Device`). ``shelf``: where the processes
    of a simulation share the users' prepared inputs (:func:`default_user`; a custom
    ``user_factory`` builds its own).
    """

    settings: RunSettings | None = None
    source: ProblemSource | None = None
    user_factory: UserFactory = default_user
    shelf: Shelf | None = None

    def factory(self) -> UserFactory:
        if self.shelf is not None and self.user_factory is default_user:
            return SharedUsers(self.shelf)
        return self.user_factory

    def resolve(
        self, config: dict, context: Context, device: Device
    ) -> tuple[RunSettings, ProblemSource]:
        """An entry's settings and where its user's inputs come from (the device's own
        assets when its node config names them)."""
        if "settings" in config:
            settings = _settings_from_json(str(config["settings"]))
        elif self.settings is not None:
            settings = self.settings
        else:
            from conf import settings_from_run_config

            settings = settings_from_run_config(context.run_config)
        device.check(settings)
        return settings, self.source if self.source is not None else device.source(settings)

    def query(self, msg: Message, context: Context) -> Message:
        """Say which users this node serves; when the query names the run, check first that
        this device can serve it (its index, its model, its built assets)."""
        try:
            device = Device.from_node_config(context.node_config)
            settings = records.query_settings(msg.content)
            users = [device.index]
            if settings is not None:
                run, own = self.resolve({"settings": settings}, context, device)
                if device.model is not None:  # a deployed device: are its assets there?
                    own.user_data(device.index)
                users = device.users(run.num_users)
        except Exception as exc:
            return Message(records.refusal(f"{type(exc).__name__}: {exc}"), reply_to=msg)
        return Message(records.identity(users), reply_to=msg)

    def train(self, msg: Message, context: Context) -> Message:
        """Every entry's training step: the uplink of :meth:`AlignmentClient.fit`."""
        return self._serve(msg, context, evaluate=False)

    def evaluate(self, msg: Message, context: Context) -> Message:
        """Every entry's evaluation (:meth:`AlignmentClient.evaluate`); the point ends."""
        return self._serve(msg, context, evaluate=True)

    def _serve(self, msg: Message, context: Context, *, evaluate: bool) -> Message:
        indices = records.entries(msg.content)
        requests = [records.config(msg.content, i) for i in indices]
        device = Device.from_node_config(context.node_config)
        runs = [self.resolve(config, context, device) for config in requests]
        # the entry's user (a simulated node may serve several); its partition-id otherwise
        wanted = [int(config.get("user", device.index)) for config in requests]
        _forget_finished(context, msg.content, [settings for settings, _ in runs])
        reply = RecordDict()
        served = []
        for i, config, (settings, source), k in zip(indices, requests, runs, wanted, strict=True):
            if device.serves(k, settings.num_users):
                served.append((i, config, settings, k, source))
            else:  # that entry fails alone
                records.add_error(
                    reply,
                    i,
                    f"ValueError: a message for user {k}, which this node does not serve "
                    f"(node config {dict(context.node_config)})",
                )
        users = cached_users(
            [(k, settings, source) for _, _, settings, k, source in served], self.factory()
        )
        for (i, config, settings, k, _), user in zip(served, users, strict=True):
            key = state_key(settings, k)
            user.import_state(records.state_arrays(context.state.get(key)))
            client = AlignmentClient(user)
            try:
                parameters = records.arrays(msg.content, i)
                if evaluate:
                    _, samples, values = client.evaluate(parameters, config)
                    uplink, kind = None, None
                else:
                    uplink, samples, values = client.fit(parameters, config)
                    kind = values.pop("kind")
            except Exception as exc:  # this point's failure; the others go on
                records.add_error(reply, i, f"{type(exc).__name__}: {exc}")
                continue
            if evaluate and not _deploying(settings, config):
                context.state.pop(key, None)  # the point is over for this user
            else:
                context.state[key] = records.state_record(user.export_state())
            records.add_reply(reply, i, uplink, kind, values, samples)
        return Message(reply, reply_to=msg)


def _deploying(settings: RunSettings, config: dict) -> bool:
    """Whether the point goes on after this evaluation: a deployment phase
    (``tracking.*``) has slots after the entry's round (the evaluation's round is the
    last training round; a slot's, the slot)."""
    slots = settings.tracking.slots
    if not slots:
        return False
    return str(config.get("kind")) != protocol.AlignSlot.KIND or int(config["round"]) < slots


def _forget_finished(context: Context, content: RecordDict, runs: list[RunSettings]) -> None:
    """Drop what the user learned in points that are over (or were abandoned): those
    neither in this message nor named in flight by it."""
    keep = set(records.live_points(content)) | {point_key(settings) for settings in runs}
    for key in [k for k in context.state if k.startswith(STATE) and _point_of(k) not in keep]:
        del context.state[key]


def make_client_app(
    settings: RunSettings | None = None,
    source: ProblemSource | None = None,
    user_factory: UserFactory = default_user,
    shelf: Shelf | None = None,
) -> ClientApp:
    """A ClientApp bound to ``settings``/``source`` (see :class:`UserNode`), for a
    simulation; ``app`` below reads everything from its messages and node config."""
    node = UserNode(settings, source, user_factory, shelf)
    bound = ClientApp()
    bound.query()(node.query)
    bound.train()(node.train)
    bound.evaluate()(node.evaluate)
    return bound


# `flwr run .` entry point ([tool.flwr.app.components] clientapp): each message names its
# run, and the node config names the user (and, deployed, its model and assets).
app = ClientApp()
_NODE = UserNode()


@app.query()
def query(msg: Message, context: Context) -> Message:
    return _NODE.query(msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _NODE.train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _NODE.evaluate(msg, context)
