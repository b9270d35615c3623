"""The ClientApp: each SuperNode runs one user, chosen by its ``partition-id``.

The same app serves simulation (Ray assigns partition ids) and deployment (a
SuperNode started with ``--node-config 'partition-id=K model=... cache-dir=...'``,
see :mod:`clients.device`). A message carries
one entry per cell of a sweep running in lockstep (one entry for a single
run), and every entry names the settings of its cell; the user is rebuilt
deterministically from them, so the process keeps a cache of users. What a
user learns (equalizer, feature map) lives in the node's ``context.state``
under its cell's key, because Ray may move a node between processes. A cell's
state is dropped once the cell is evaluated, or when a message no longer
names it among the cells in flight.

An entry that fails (a wrong message kind, a user that raises) is answered
with its error, so the other cells of the same message go on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.client import AlignmentClient
from clients.device import Device
from clients.shelf import Shelf
from common.maths.conventions import Conventions
from common.parties import protocol
from common.parties.access_point import access_point_class
from common.parties.user import PreparedData, User
from common.run.cells import cell_key
from common.run.session import build_user
from common.run.settings import RunSettings
from common.run.sources import ProblemSource

STATE = "user_state."  # + the cell key: what the user learned in that cell

UserFactory = Callable[[int, ProblemSource, RunSettings], User]
Step = Callable[[User, list[np.ndarray], dict], tuple[list[np.ndarray] | None, dict]]

_USERS: dict[tuple, User] = {}


def default_user(
    index: int, source: ProblemSource, settings: RunSettings, shelf: Shelf | None = None
) -> User:
    """The method's own user class over this user's private inputs.

    With a ``shelf``, and a source that names its data (``user_key``), the
    inputs are prepared once per machine and every process, and every cell of
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
    index: int, runs: list[tuple[RunSettings, ProblemSource]], factory: UserFactory
) -> list[User]:
    """This process's copies of user ``index`` for these runs.

    A process may serve several nodes (users); the users of runs other than
    these are dropped, those of other nodes in these runs are kept.
    """
    keys = [(settings.to_json(), source, factory, index) for settings, source in runs]
    current = {key[:3] for key in keys}
    for key in [k for k in _USERS if k[:3] not in current]:
        del _USERS[key]
    for key, (settings, source) in zip(keys, runs, strict=True):
        if key not in _USERS:
            _USERS[key] = factory(index, source, settings)
    return [_USERS[key] for key in keys]


@functools.lru_cache(maxsize=64)
def _settings_from_json(text: str) -> RunSettings:
    return RunSettings.from_json(text)


def state_key(settings: RunSettings) -> str:
    return STATE + cell_key(settings)


def make_client_app(
    settings: RunSettings | None = None,
    source: ProblemSource | None = None,
    user_factory: UserFactory = default_user,
    shelf: Shelf | None = None,
) -> ClientApp:
    """A ClientApp bound to ``settings``/``source``, or reading them from each message.

    ``shelf``: where the processes of a simulation share the users' prepared
    inputs (:func:`default_user`; a custom ``user_factory`` builds its own).
    """
    app = ClientApp()
    if shelf is not None and user_factory is default_user:
        user_factory = SharedUsers(shelf)

    def resolve(
        config: dict, context: Context, device: Device
    ) -> tuple[RunSettings, ProblemSource]:
        """An entry's cell settings and where its user's inputs come from (the device's own
        assets when its node config names them)."""
        if "settings" in config:
            resolved = _settings_from_json(str(config["settings"]))
        elif settings is not None:
            resolved = settings
        else:
            from conf import settings_from_run_config

            resolved = settings_from_run_config(context.run_config)
        device.check(resolved)
        return resolved, source if source is not None else device.source(resolved)

    def serve(msg: Message, context: Context, step: Step, *, last: bool) -> Message:
        """Run ``step`` for every entry with that cell's user and state; ``last``: the
        cell ends here (its state is dropped)."""
        indices = protocol.entry_indices(msg.content)
        requests = [dict(msg.content[protocol.entry(protocol.CONFIG, i)]) for i in indices]
        device = Device.from_node_config(context.node_config)
        runs = [resolve(config, context, device) for config in requests]
        users = cached_users(device.index, runs, user_factory)
        live = msg.content.get(protocol.LIVE)
        cells = {STATE + key for key in live["cells"]} if live else set()
        cells |= {state_key(run) for run, _ in runs}
        for key in [k for k in context.state if k.startswith(STATE) and k not in cells]:
            del context.state[key]  # a cell that is over (or was abandoned)
        reply = RecordDict()
        for i, config, (run, _), user in zip(indices, requests, runs, users, strict=True):
            key = state_key(run)
            saved = context.state.get(key)
            user.import_state({k: a.numpy() for k, a in saved.items()} if saved else {})
            try:
                arrays = msg.content[protocol.entry(protocol.ARRAYS, i)].to_numpy_ndarrays()
                uplink, metrics = step(user, arrays, config)
            except Exception as exc:  # this cell's failure; the others go on
                error = f"{type(exc).__name__}: {exc}"
                reply[protocol.entry(protocol.CONFIG, i)] = ConfigRecord({"error": error})
                continue
            if last:
                context.state.pop(key, None)
            else:
                learned = user.export_state()
                context.state[key] = ArrayRecord({k: Array(v) for k, v in learned.items()})
            answer = {"kind": str(metrics.pop("kind"))} if uplink is not None else {}
            reply[protocol.entry(protocol.CONFIG, i)] = ConfigRecord(answer)
            reply[protocol.entry(protocol.METRICS, i)] = MetricRecord(metrics)
            if uplink is not None:
                reply[protocol.entry(protocol.ARRAYS, i)] = ArrayRecord(numpy_ndarrays=uplink)
        return Message(reply, reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        """Say which user this node runs; when the query names the run, check first that
        this device can serve it (its index, its model, its prepared assets)."""
        try:
            device = Device.from_node_config(context.node_config)
            config = msg.content.get(protocol.CONFIG)
            if config is not None and "settings" in config:
                _, own = resolve(dict(config), context, device)
                if device.model is not None:  # a deployed device: are its assets there?
                    own.user_data(device.index)
        except Exception as exc:
            error = ConfigRecord({"error": f"{type(exc).__name__}: {exc}"})
            return Message(RecordDict({protocol.CONFIG: error}), reply_to=msg)
        identity = MetricRecord({"partition-id": device.index})
        return Message(RecordDict({protocol.METRICS: identity}), reply_to=msg)

    def train_step(user: User, arrays: list[np.ndarray], config: dict):
        arrays_up, _, metrics = AlignmentClient(user).fit(arrays, config)
        return arrays_up, metrics

    def evaluate_step(user: User, arrays: list[np.ndarray], config: dict):
        _, _, metrics = AlignmentClient(user).evaluate(arrays, config)
        return None, metrics

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return serve(msg, context, train_step, last=False)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return serve(msg, context, evaluate_step, last=True)

    return app


# `flwr run .` entry point ([tool.flwr.app.components] clientapp).
app = make_client_app()
